//! The text of a `DKIM-Signature` field, folded so that no line reaches
//! 78 characters (RFC 5322 2.1.1): tags break between one another, and
//! the `h=` list and base64 values break inside, where RFC 6376 allows
//! folding whitespace.

/// Longest line, CRLF not counted.
const MAX_LINE: usize = 77;
/// Room kept for the start of `b=`'s value on the line that has `b=`, so
/// that the signed text always ends in `b=` with nothing after it.
const B_ROOM: usize = 8;

pub struct Folder {
    text: String,
    line: usize,
}

impl Default for Folder {
    fn default() -> Folder {
        Folder::new()
    }
}

impl Folder {
    pub fn new() -> Folder {
        let text = String::from("DKIM-Signature:");
        let line = text.len();
        Folder { text, line }
    }

    fn fold_if(&mut self, room: usize) {
        if self.line + 1 + room > MAX_LINE {
            self.text.push_str("\r\n\t");
            self.line = 1;
        } else {
            self.text.push(' ');
            self.line += 1;
        }
    }

    /// A token that may not break.
    pub fn word(&mut self, word: &str) {
        self.fold_if(word.len());
        self.text.push_str(word);
        self.line += word.len();
    }

    /// `h=`: names joined by colons, a break allowed after each colon.
    pub fn list(&mut self, tag: &str, names: &[&str]) {
        let last = names.len().saturating_sub(1);
        for (i, name) in names.iter().enumerate() {
            let end = if i == last { ";" } else { ":" };
            let prefix = if i == 0 { tag } else { "" };
            let len = prefix.len() + name.len() + end.len();
            self.fold_if(len);
            self.text.extend([prefix, name, end]);
            self.line += len;
        }
    }

    /// A tag whose base64 value may break anywhere (`bh=`), then `;`.
    pub fn base64(&mut self, tag: &str, value: &str) {
        self.fold_if(tag.len() + B_ROOM);
        self.text.push_str(tag);
        self.line += tag.len();
        self.base64_value(value);
        self.text.push(';');
        self.line += 1;
    }

    /// `b=` with nothing after it: the text the signature covers.
    pub fn open_signature(&mut self) -> &str {
        self.fold_if(2 + B_ROOM);
        self.text.push_str("b=");
        self.line += 2;
        &self.text
    }

    /// The signature after `b=`, and the field's final CRLF.
    pub fn close_signature(mut self, value: &str) -> String {
        self.base64_value(value);
        self.text.push_str("\r\n");
        self.text
    }

    fn base64_value(&mut self, mut value: &str) {
        while !value.is_empty() {
            // Leaves room for a `;` after the last piece.
            let room = MAX_LINE.saturating_sub(self.line + 1);
            if room == 0 {
                self.text.push_str("\r\n\t");
                self.line = 1;
                continue;
            }
            let (piece, rest) = value.split_at(room.min(value.len()));
            self.text.push_str(piece);
            self.line += piece.len();
            value = rest;
        }
    }
}
