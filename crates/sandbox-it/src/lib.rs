//! Integration tests of the process sandbox against real Lambda runtime clients: the Rust
//! `lambda_runtime` crate (the `rust_lambda` fixture binary here) and Python's
//! `awslambdaric`. Nothing here is published.
