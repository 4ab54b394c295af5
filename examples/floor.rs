//! The hyper floor: the least an HTTP/1 reverse proxy built on hyper 1 and tokio can cost per
//! request, for `benches/load.sh` and `benches/instructions.sh` to run beside zerodown, nginx and
//! HAProxy. Whatever zerodown costs above it is zerodown's own.
//!
//! Built from the workspace's locked hyper and tokio, not part of the product:
//! `cargo build --release --example floor`, then
//! `floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001 [--upstream ...] [--threads 1]`.
//!
//! Per thread: one `current_thread` runtime with its own `SO_REUSEPORT` listener, and a pool of
//! upstream HTTP/1 connections that no other thread touches. Upstreams are taken round-robin.
//! Bodies pass through as hyper's `Incoming` both ways; no timers, no header rewriting, no
//! retries. An upstream error closes the client connection (there is no body type for a 502).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use clap::Parser;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::LocalSet;

#[derive(Parser)]
#[command(about = "bare hyper 1 + tokio reverse proxy: the floor zerodown is measured against")]
struct Args {
    /// Address to listen on (every thread binds it with SO_REUSEPORT).
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream address; repeat for several (round-robin).
    #[arg(long, required = true)]
    upstream: Vec<SocketAddr>,
    /// Threads, each with its own runtime, listener and upstream pool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let listen = args.listen;
    for i in 0..args.threads.max(1) {
        let upstreams = args.upstream.clone();
        std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .spawn(move || worker(listen, upstreams))
            .expect("spawn worker thread");
    }
    // The main thread only waits for a signal, so that the process exits through `exit`
    // (valgrind then writes its counts; the workers need no draining for a benchmark).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    std::process::exit(0);
}

/// One thread's proxy: its listener, its pool, every task on one `LocalSet`.
fn worker(listen: SocketAddr, upstreams: Vec<SocketAddr>) {
    // enable_io only: no time driver, so nothing on the request path can arm a timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let listener = bind(listen).expect("bind listener");
        let pool = Rc::new(Pool::new(upstreams));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("floor: accept: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req| {
                    let pool = pool.clone();
                    async move { pool.forward(req).await }
                });
                // The default header-read timeout needs a timer and is skipped without one;
                // say so explicitly.
                let _ = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(None)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Idle and busy connections per upstream, for this thread only (hence `Rc`/`RefCell`, no lock).
struct Pool {
    upstreams: Vec<SocketAddr>,
    conns: Vec<RefCell<Vec<SendRequest<Incoming>>>>,
    next: Cell<usize>,
}

impl Pool {
    fn new(upstreams: Vec<SocketAddr>) -> Self {
        let conns = upstreams.iter().map(|_| RefCell::new(Vec::new())).collect();
        Pool {
            upstreams,
            conns,
            next: Cell::new(0),
        }
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
        let i = self.next.get();
        self.next.set((i + 1) % self.upstreams.len());
        let mut sender = match self.checkout(i) {
            Some(sender) => sender,
            None => connect(self.upstreams[i]).await?,
        };
        let resp = sender.send_request(req).await?;
        // Back as soon as the head is in: the body still streams on this connection, and
        // `checkout` skips it until hyper says it can take the next request.
        self.conns[i].borrow_mut().push(sender);
        Ok(resp)
    }

    /// The most recently used connection that is ready for a request; closed ones are dropped.
    fn checkout(&self, i: usize) -> Option<SendRequest<Incoming>> {
        let mut conns = self.conns[i].borrow_mut();
        let mut at = conns.len();
        while at > 0 {
            at -= 1;
            if conns[at].is_ready() {
                return Some(conns.swap_remove(at));
            }
            if conns[at].is_closed() {
                conns.swap_remove(at);
            }
        }
        None
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
