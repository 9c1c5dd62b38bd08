//! A fault proxy for benchmarks: lifeboat talks to S3 through it, with added
//! latency (see `lifeboat::testkit::proxy`).
//!
//!     faultproxy --upstream 127.0.0.1:PORT [--latency-ms N] [--port P]
//!
//! Prints `listening on 127.0.0.1:PORT` once it accepts connections, then
//! serves until killed.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lifeboat::testkit::proxy::FaultProxy;

/// Forwards HTTP requests to an S3 server, each after a delay.
#[derive(Parser)]
#[command(name = "faultproxy")]
struct Args {
    /// The S3 server, e.g. 127.0.0.1:9000.
    #[arg(long)]
    upstream: SocketAddr,
    /// Delay before each request is forwarded, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let proxy = match FaultProxy::start_at(listen, args.upstream) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultproxy: could not listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    proxy.set_latency(Duration::from_millis(args.latency_ms));
    println!("listening on {}", proxy.addr());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
