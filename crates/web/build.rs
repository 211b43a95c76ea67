//! Builds the web app under `web/` with Vite and writes the table of its files
//! (each with a gzip copy when that is smaller) for `include_bytes!`, so the
//! binary carries the pages and needs nothing beside it. npm packages are
//! installed with `npm ci` from the committed lock file when `node_modules` is
//! missing or older than the lock.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const WATCHED: &[&str] = &[
    "src",
    "index.html",
    "room.html",
    "studio.html",
    "orders.html",
    "embed.html",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "vite.config.ts",
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));
    let dist = out.join("dist");
    for path in WATCHED {
        println!("cargo::rerun-if-changed={}", web.join(path).display());
    }

    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed).is_none() || modified(&installed) < modified(&lock) {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&web));
    }
    run(Command::new(web.join("node_modules/.bin/vite"))
        .arg("build")
        .arg("--outDir")
        .arg(&dist)
        .args(["--emptyOutDir", "--logLevel", "warn"])
        .current_dir(&web));

    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for file in &files {
        let rel = file
            .strip_prefix(&dist)
            .expect("walked under dist")
            .to_str()
            .expect("Vite writes UTF-8 names")
            .replace('\\', "/");
        let body = fs::read(file).expect("read a built file");
        let gz = PathBuf::from(format!("{}.gz", file.display()));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&body).expect("gzip in memory");
        let compressed = encoder.finish().expect("gzip in memory");
        let gzip = if compressed.len() + 64 < body.len() {
            fs::write(&gz, &compressed).expect("write the gzip copy");
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            String::from("None")
        };
        writeln!(
            table,
            "    Asset {{ path: {rel:?}, content_type: {:?}, body: include_bytes!({:?}), gzip: {gzip} }},",
            content_type(&rel),
            file.display().to_string(),
        )
        .expect("write to a String");
    }
    table.push_str("];\n");
    fs::write(out.join("assets.rs"), table).expect("write the asset table");
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?} ({e}): building the web app needs Node.js 20.19+ and npm",
            command.get_program()
        )
    });
    assert!(status.success(), "{command:?} failed: {status}");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("Vite wrote its output") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_none_or(|e| e != "gz") {
            files.push(path);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
