//! `healthcheck [URL|PORT] [--timeout-ms N]`: exit 0 if the URL answers 200, else 1.
//! See lib.rs for why this exists. Its one line of output ends up in
//! `docker inspect --format '{{json .State.Health}}' ximilar-gw`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match healthcheck::parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    };
    let target = &options.target;
    let url = format!("http://{}{}", target.authority, target.path);
    match healthcheck::probe(target, options.timeout) {
        Ok(200) => {
            println!("healthy: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::from(1)
        }
        Err(reason) => {
            eprintln!("unhealthy: {url}: {reason}");
            ExitCode::from(1)
        }
    }
}
