//! A minimal program for the process benchmarks, with nothing but std, so that its own cost
//! is the same on both sides of a comparison:
//!
//! - `bench_runtime` (no argument): a custom Lambda runtime; it asks the Runtime API named
//!   by `AWS_LAMBDA_RUNTIME_API` for an event and posts the event back as the response,
//!   forever, over one keep-alive connection.
//! - `bench_runtime echo PORT_FILE`: an HTTP server on a loopback port (written to
//!   `PORT_FILE`) that answers every request with its body: the peer of a warm invoke.
//! - `bench_runtime ready`: prints one line and exits: the peer of an environment start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("ready") => {
            println!("ready");
            Ok(())
        }
        Some("echo") => echo(args.get(2).map(String::as_str).unwrap_or("port")),
        // The server closing the connection ends the runtime.
        _ => match runtime() {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            other => other,
        },
    }
}

/// Reads one HTTP message's head and body; returns the head's lines and the body.
fn read_message(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let length = head
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn runtime() -> std::io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(std::io::Error::other)?;
    let stream = TcpStream::connect(&api)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        // One write per request, as HTTP clients do (`write!` would send each piece).
        let next =
            format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\n\r\n");
        writer.write_all(next.as_bytes())?;
        let Some((head, event)) = read_message(&mut reader)? else {
            return Ok(());
        };
        let id = header(&head, "lambda-runtime-aws-request-id")
            .unwrap_or("none")
            .to_owned();
        let mut request = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: {api}\r\nContent-Length: {}\r\n\r\n",
            event.len()
        )
        .into_bytes();
        request.extend_from_slice(&event);
        writer.write_all(&request)?;
        if read_message(&mut reader)?.is_none() {
            return Ok(());
        }
    }
}

fn echo(port_file: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    std::fs::write(port_file, listener.local_addr()?.port().to_string())?;
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            while let Some((_, body)) = read_message(&mut reader)? {
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend_from_slice(&body);
                writer.write_all(&response)?;
            }
            Ok(())
        });
    }
    Ok(())
}
