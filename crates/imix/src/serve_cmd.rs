//! `imix serve`: the explorer page (crates/imix-serve).

use crate::common::ModelArgs;
use anyhow::Result;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Arguments of `imix serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A warm-up bundle (`imix warmup --out`): its adaptor and encoder decode, and its task model
    /// adds the soft label, its prediction and the intrusion verdict [default: the shipped stage-1
    /// adaptor, no task model]
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// A labelled file (text and label columns) whose sentences the page offers as sources
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// An `imix augment` output the Rows tab opens (the page can also open one from disk)
    #[arg(long, value_name = "FILE")]
    rows: Option<PathBuf>,
    /// Stage-1 adaptor file, without --model [default: the shipped one]
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    adaptor: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// Port (0: any free one, printed at start)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on; anything but loopback lets other machines decode on yours
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
}

/// Runs `imix serve` until Ctrl-C.
pub fn run(a: ServeArgs) -> Result<()> {
    for (flag, p) in [("--input", &a.input), ("--rows", &a.rows)] {
        if let Some(p) = p {
            anyhow::ensure!(p.is_file(), "{flag} {}: no such file", p.display());
        }
    }
    if let Some(d) = &a.model {
        anyhow::ensure!(
            d.is_dir(),
            "--model {}: not a directory (an `imix warmup --out` bundle)",
            d.display()
        );
    }
    let o = imix_serve::ServeOptions {
        addr: Some(SocketAddr::new(a.host, a.port)),
        encoder: a.models.encoder,
        llm: a.models.llm,
        adaptor: a.adaptor,
        model: a.model,
        input: a.input,
        rows: a.rows,
    };
    imix_serve::serve(o, &|addr| {
        // stdout, one line: a script (or a test) waits for it to learn the port.
        println!("imix explorer at http://{addr}/  (Ctrl-C stops it)");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}
