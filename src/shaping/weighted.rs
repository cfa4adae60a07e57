//! Smooth weighted round robin, as nginx chooses among its upstreams:
//! which member of a set (an egress source of a pool) takes the next
//! message, in proportion to the members' weights and spread out, so a
//! source of weight 3 beside one of weight 1 sends `A A B A`, not
//! `A A A B`, and no destination sees a burst from one address.
//!
//! Owns: the current weights of one set's members and the choice among
//! those the caller says are eligible now.
//! Must never: read the clock, do I/O or allocate after construction (it
//! is asked once per message); let a member that is skipped (the wrong
//! address family, suspended, out of its warm-up budget) shift the
//! proportions of the others.

/// The members' weights and the running state of the choice among them.
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    weight: u32,
    /// Grows by `weight` at each choice the member takes part in and
    /// drops by the total when it is chosen: how far it is behind its
    /// share. `i64`: the sum of all weights fits for any realistic set.
    current: i64,
}

impl SmoothWeighted {
    /// A set with one member per weight, in order; a weight of 0 is a
    /// member that is never chosen.
    pub fn new(weights: &[u32]) -> SmoothWeighted {
        SmoothWeighted {
            members: weights
                .iter()
                .map(|&weight| Member { weight, current: 0 })
                .collect(),
        }
    }

    /// How many members the set has (eligible or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the member that goes next among those for which
    /// `eligible` holds, or `None` when there is none.
    ///
    /// A skipped member takes no part in this choice: its current weight
    /// neither grows nor shrinks, so the others keep their ratio among
    /// themselves, and it resumes its own place when it is eligible again.
    pub fn next(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total: i64 = 0;
        // The chosen member so far and its current weight.
        let mut best: Option<(usize, i64)> = None;
        for (i, m) in self.members.iter_mut().enumerate() {
            if m.weight == 0 || !eligible(i) {
                continue;
            }
            m.current += i64::from(m.weight);
            total += i64::from(m.weight);
            // Strictly greater: ties go to the earlier member, which makes
            // the order of equal weights plain alternation.
            if best.is_none_or(|(_, current)| m.current > current) {
                best = Some((i, m.current));
            }
        }
        let (chosen, _) = best?;
        self.members[chosen].current -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(set: &mut SmoothWeighted, n: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..n).map(|_| set.next(&eligible).unwrap()).collect()
    }

    fn counts(picks: &[usize], members: usize) -> Vec<usize> {
        let mut c = vec![0; members];
        for &p in picks {
            c[p] += 1;
        }
        c
    }

    /// The longest run of `member` chosen again and again.
    fn longest_run(picks: &[usize], member: usize) -> usize {
        let (mut longest, mut run) = (0, 0);
        for &p in picks {
            run = if p == member { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        longest
    }

    #[test]
    fn three_to_one_is_exact_and_never_more_than_three_in_a_row() {
        let mut set = SmoothWeighted::new(&[3, 1]);
        let picks = draws(&mut set, 400, |_| true);
        assert_eq!(counts(&picks, 2), [300, 100]);
        assert_eq!(longest_run(&picks, 0), 3);
        assert_eq!(longest_run(&picks, 1), 1);
        assert_eq!(&picks[..4], [0, 0, 1, 0], "A A B A, not A A A B");
    }

    #[test]
    fn five_one_one_is_spread_out() {
        let mut set = SmoothWeighted::new(&[5, 1, 1]);
        let picks = draws(&mut set, 700, |_| true);
        assert_eq!(counts(&picks, 3), [500, 100, 100]);
        // A plain round robin sends the heavy member's 5 back to back.
        assert!(longest_run(&picks, 0) <= 4, "{picks:?}");
        // Every window of one period holds each member its weight's worth:
        // the light members are not bunched together.
        for window in picks.windows(7) {
            assert_eq!(counts(window, 3), [5, 1, 1], "{window:?}");
        }
    }

    #[test]
    fn an_ineligible_member_is_skipped_and_the_rest_keep_their_ratio() {
        let mut set = SmoothWeighted::new(&[3, 2, 1]);
        let picks = draws(&mut set, 400, |i| i != 1);
        assert_eq!(counts(&picks, 3), [300, 0, 100]);
        assert_eq!(longest_run(&picks, 0), 3);
    }

    #[test]
    fn a_member_that_returns_takes_its_share_again() {
        let mut set = SmoothWeighted::new(&[1, 1, 2]);
        let early = draws(&mut set, 100, |i| i != 2);
        assert_eq!(counts(&early, 3), [50, 50, 0]);
        let later = draws(&mut set, 400, |_| true);
        assert_eq!(counts(&later, 3), [100, 100, 200]);
    }

    #[test]
    fn no_eligible_member_is_none() {
        let mut set = SmoothWeighted::new(&[3, 1]);
        assert_eq!(set.next(|_| false), None);
        // A member of weight 0 is never chosen, even when alone.
        assert_eq!(SmoothWeighted::new(&[0, 0]).next(|_| true), None);
        assert_eq!(SmoothWeighted::new(&[]).next(|_| true), None);
        // Asking with none eligible changed nothing.
        assert_eq!(draws(&mut set, 4, |_| true), [0, 0, 1, 0]);
    }

    #[test]
    fn equal_weights_alternate() {
        let mut set = SmoothWeighted::new(&[2, 2, 2]);
        let picks = draws(&mut set, 9, |_| true);
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn counts_are_exact_over_whole_periods() {
        for weights in [&[7, 3][..], &[1, 2, 3, 4], &[10, 1], &[100, 99, 1]] {
            let mut set = SmoothWeighted::new(weights);
            let total: u32 = weights.iter().sum();
            let picks = draws(&mut set, total as usize * 3, |_| true);
            let want: Vec<usize> = weights.iter().map(|&w| w as usize * 3).collect();
            assert_eq!(counts(&picks, weights.len()), want, "{weights:?}");
        }
    }
}
