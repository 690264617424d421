//! One durable execution suspended on hub A, moved, and finished on hub B.
//!
//! ```text
//! cargo run --example migrate
//! ```
//!
//! The function reserves stock (a journaled step), waits for the payment event of its
//! order (which suspends it: its checkpoint is saved and its worker freed), then ships. Hub
//! A starts it; the suspended execution is exported, imported by hub B and released on A;
//! the payment is published on B, where the execution resumes by replay — the reservation
//! is not done again — and finishes. The journal is printed at the end.

use std::process::ExitCode;

use bytes::Bytes;
use fnhub::{
    DurableContext, EdgeHub, Event, EventSource, ExecutionId, FunctionName, FunctionSpec,
    Invocation, durable_fn,
};

fn order_function(hub: &'static str) -> impl fnhub::DurableFunction {
    durable_fn(move |ctx: DurableContext, input: Bytes| async move {
        let order = String::from_utf8_lossy(&input).into_owned();
        ctx.step("reserve", || async {
            println!("  [{hub}] reserving stock for {order}");
            Ok(Bytes::from(format!("reserved on {hub}")))
        })
        .await?;
        let payment = ctx
            .wait_for("payment", &format!("payments/{order}"))
            .await?;
        ctx.step("ship", || async {
            println!("  [{hub}] shipping {order}");
            Ok(Bytes::from(format!("shipped on {hub}")))
        })
        .await?;
        let mut journal = String::new();
        for e in ctx.journal() {
            let result = match &e.result {
                Ok(b) => String::from_utf8_lossy(b).into_owned(),
                Err(err) => format!("error: {err}"),
            };
            journal.push_str(&format!(
                "  #{} {:<8} {:?} -> {result}\n",
                e.seq, e.name, e.operation
            ));
        }
        journal.push_str(&format!(
            "  payment was {:?}\n",
            String::from_utf8_lossy(&payment)
        ));
        Ok(Bytes::from(journal))
    })
}

fn hub(name: &'static str) -> Result<EdgeHub, Box<dyn std::error::Error>> {
    Ok(EdgeHub::builder()
        .name(name)
        .durable(
            FunctionSpec::in_process(FunctionName::new("order")?),
            order_function(name),
        )
        .build()?)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = (hub("hub-a")?, hub("hub-b")?);

    println!("hub-a: invoking order o-17");
    let invocation = Invocation::new("order".parse()?, "o-17");
    // A durable execution's id is its invocation's id.
    let execution: ExecutionId = invocation.id.into();
    let started = a.call(invocation).await?.outcome?;
    if !started.is_empty() {
        return Err("the execution finished without suspending".into());
    }
    println!("hub-a: execution {execution} suspended, waiting for payments/o-17");

    let checkpoint = a.export(execution).await?;
    println!(
        "hub-a: exported the checkpoint ({} bytes)",
        checkpoint.len()
    );
    b.import(&checkpoint).await?;
    println!("hub-b: imported it");
    a.release(execution).await?;
    println!("hub-a: released it");

    let finished = {
        let b = b.clone();
        tokio::spawn(async move { b.durable_outcome(execution).await })
    };
    tokio::task::yield_now().await;
    println!("hub-b: publishing payments/o-17");
    b.publish(Event::new(
        "payments/o-17",
        "42.00 EUR",
        EventSource::Device("till-3".into()),
    ))?;
    let outcome = finished.await?.ok_or("hub-b stopped")??;
    println!("hub-b: execution finished; its journal:");
    print!("{}", String::from_utf8_lossy(&outcome));

    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
