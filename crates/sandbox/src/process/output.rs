//! Sidecars kept running beside a function, their output into `tracing`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fnhub_core::{PrepareError, SidecarSpec};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::spawn::Plan;

use super::env::KillOnDrop;
use super::lambda::LAMBDA_PATH;
use super::*;

/// Starts `sidecar` and keeps it running: when it exits, the environment is marked
/// unhealthy (so its pool replaces it) and the sidecar is started again after a backoff.
pub(super) fn supervise_sidecar(
    sidecar: SidecarSpec,
    function_plan: Plan,
    function: &str,
    healthy: Arc<AtomicBool>,
) -> Result<impl Future<Output = Result<tokio::task::JoinHandle<()>, PrepareError>>, PrepareError> {
    let Some((program, args)) = sidecar.command.split_first() else {
        return Err(start_error(format!(
            "sidecar {:?} has an empty command",
            sidecar.name
        )));
    };
    let mut plan = function_plan;
    plan.program = spawn::resolve_program(program, Some(LAMBDA_PATH.as_ref()))
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|| program.into());
    plan.args = args.iter().map(Into::into).collect();
    plan.env
        .push(("FNHUB_SIDECAR_NAME".into(), sidecar.name.clone()));
    let function = function.to_owned();
    Ok(async move {
        let first = plan
            .spawn()
            .await
            .map_err(|e| start_error(format!("sidecar {:?} failed to start: {e}", sidecar.name)))?;
        Ok(tokio::spawn(async move {
            let mut child = first;
            let mut backoff = Duration::from_millis(50);
            loop {
                drain_output(&mut child, &function, &sidecar.name);
                // Aborting this task (the environment shut down) kills the sidecar's group.
                let group = KillOnDrop(
                    child
                        .id()
                        .map(|pid| (pid, Arc::new(AtomicBool::new(false)), None)),
                );
                let status = child.wait().await;
                group.disarm();
                healthy.store(false, Ordering::Relaxed);
                tracing::warn!(function = %function, sidecar = %sidecar.name, ?status, "sidecar exited; the environment is unhealthy");
                loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match plan.spawn().await {
                        Ok(c) => {
                            child = c;
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(function = %function, sidecar = %sidecar.name, %error, "sidecar restart failed");
                        }
                    }
                }
            }
        }))
    })
}

pub(super) fn drain_output(child: &mut tokio::process::Child, function: &str, sidecar: &str) {
    for (stream, name) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            "stdout",
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            "stderr",
        ),
    ] {
        let Some(stream) = stream else { continue };
        let function = function.to_owned();
        let sidecar = sidecar.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "fnhub::sidecar", function = %function, sidecar = %sidecar, stream = name, "{line}");
            }
        });
    }
}
