//! Signals through signal-hook: the first SIGTERM or SIGINT starts a graceful shutdown, a
//! second one exits at once; SIGHUP asks for a reload of credentials.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

pub struct SignalEvents {
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub reload: mpsc::UnboundedReceiver<()>,
}

pub fn install() -> anyhow::Result<SignalEvents> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (reload_tx, reload) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("outbox-signals".into())
        .spawn(move || {
            let mut stop_tx = Some(stop_tx);
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading credentials");
                        let _ = reload_tx.send(());
                    }
                    _ => match stop_tx.take() {
                        Some(tx) => {
                            tracing::info!(
                                signal = sig,
                                "shutdown requested; a second signal exits at once"
                            );
                            let _ = tx.send(());
                        }
                        None => {
                            tracing::warn!(signal = sig, "second signal: exiting at once");
                            std::process::exit(1);
                        }
                    },
                }
            }
        })?;
    Ok(SignalEvents {
        shutdown: Box::pin(async move {
            let _ = stop_rx.await;
        }),
        reload,
    })
}
