//! The admin endpoint: an HTTP server on `[admin] address`, on a thread
//! of its own, serving `GET /metrics` in the Prometheus text format and
//! the queue API under `/queue` (JSON; `queue`).
//!
//! It runs off the shards: a scrape renders from the metrics recorder
//! (atomics the shards count into) and reads the process-wide backoff
//! tables; a queue request is asked of the shards through their control
//! channels, and only this thread waits for the answers. Only clients in
//! `[admin] allow` are served (loopback unless configured).
//! Must never: parse HTTP itself (`tiny_http` does), or serve a client
//! outside `allow`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::accounting::Recorder;
use crate::clock::Clock;
use crate::config::{AdminSection, IpNet};
use crate::metrics::{ACCOUNTING_LOST, ACCOUNTING_PAUSED, BACKOFF_ACTIVE};

mod queue;

pub use queue::QueueAdmin;

/// How often the thread looks at the stop flag and runs the recorder's
/// upkeep when nobody scrapes.
const TICK: Duration = Duration::from_millis(250);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin endpoint on {address}: {why}")]
pub struct AdminError {
    address: SocketAddr,
    why: String,
}

/// The running endpoint.
pub struct Admin {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    pub address: SocketAddr,
}

impl Admin {
    /// Binds `[admin] address` and serves it; `None` when it is off.
    pub fn start(
        section: &AdminSection,
        metrics: PrometheusHandle,
        clock: Clock,
        queue: QueueAdmin,
        accounting: Option<Recorder>,
    ) -> Result<Option<Admin>, AdminError> {
        let Some(address) = section.address else {
            return Ok(None);
        };
        let server = Server::http(address).map_err(|e| AdminError {
            address,
            why: e.to_string(),
        })?;
        let address = server.server_addr().to_ip().unwrap_or(address);
        let stop = Arc::new(AtomicBool::new(false));
        let allow = section.allow.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("petrel-admin".to_owned())
            .spawn(move || {
                let scrape = Scrape {
                    metrics,
                    clock,
                    accounting,
                };
                serve(&server, &allow, &scrape, queue, &flag)
            })
            .map_err(|e| AdminError {
                address,
                why: e.to_string(),
            })?;
        tracing::info!(%address, "admin endpoint listening (GET /metrics, /queue)");
        Ok(Some(Admin {
            stop,
            thread,
            address,
        }))
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// What a scrape renders, and what it reads first.
struct Scrape {
    metrics: PrometheusHandle,
    clock: Clock,
    accounting: Option<Recorder>,
}

impl Scrape {
    /// The metrics text, with the values read at scrape time set first:
    /// the backoffs in force and the accounting log's state.
    fn render(&self) -> String {
        let (suspended, throttled) = crate::outbound::active_backoffs(self.clock.monotonic_ms());
        metrics::gauge!(BACKOFF_ACTIVE, "action" => "suspend").set(suspended as f64);
        metrics::gauge!(BACKOFF_ACTIVE, "action" => "throttle").set(throttled as f64);
        let a = self.accounting.as_ref();
        let paused = a.is_some_and(Recorder::paused);
        metrics::gauge!(ACCOUNTING_PAUSED).set(if paused { 1.0 } else { 0.0 });
        let lost = a.map_or(0, |a| a.lost() + a.dropped());
        metrics::counter!(ACCOUNTING_LOST).absolute(lost);
        self.metrics.run_upkeep();
        self.metrics.render()
    }
}

fn serve(
    server: &Server,
    allow: &[IpNet],
    scrape: &Scrape,
    mut queue: QueueAdmin,
    stop: &AtomicBool,
) {
    let metrics = &scrape.metrics;
    let mut since_upkeep = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(TICK) {
            Ok(Some(request)) => answer(request, allow, scrape, &mut queue),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: receiving a request failed");
                std::thread::sleep(TICK);
            }
        }
        since_upkeep += TICK;
        if since_upkeep >= Duration::from_secs(5) {
            metrics.run_upkeep();
            since_upkeep = Duration::ZERO;
        }
    }
}

fn answer(request: Request, allow: &[IpNet], scrape: &Scrape, queue: &mut QueueAdmin) {
    let allowed = request.remote_addr().is_some_and(|peer| {
        allow
            .iter()
            .any(|n| crate::config::network_contains(n, peer.ip()))
    });
    let response = if !allowed {
        text(
            403,
            "forbidden: this client is not in [admin] allow\n".to_owned(),
        )
    } else if request.url() == "/queue"
        || request.url().starts_with("/queue/")
        || request.url().starts_with("/queue?")
    {
        let (status, body) = queue.handle(request.method(), request.url());
        let mut r = text(status, format!("{body}\n"));
        if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
            r.add_header(h);
        }
        r
    } else if request.url() != "/metrics" {
        text(
            404,
            "not found: GET /metrics, or the queue API under /queue\n".to_owned(),
        )
    } else if *request.method() != Method::Get {
        text(405, "method not allowed: GET /metrics\n".to_owned())
    } else {
        let mut r = text(200, scrape.render());
        if let Ok(h) =
            Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        {
            r.add_header(h);
        }
        r
    };
    let _ = request.respond(response);
}

fn text(status: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body).with_status_code(status)
}
