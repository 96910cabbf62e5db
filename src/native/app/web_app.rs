//! The built web app that `inferlab app` serves: trunk's `dist/` folder, found at run time, or
//! (the `embed` feature) the folder compiled into the binary, so that the binary alone is the
//! whole lab. Without the feature a native build never waits for a wasm build.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use axum::Router;
use tower_http::services::ServeDir;

/// Where the page's files come from.
pub enum WebApp {
    Folder(PathBuf),
    /// `dist/` as it was when the binary was built.
    #[cfg(feature = "embed")]
    Embedded,
}

#[cfg(feature = "embed")]
static EMBEDDED: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/dist");

impl WebApp {
    /// The flag, the environment ($INFERLAB_DIST), the embedded app (with `embed`), `dist`
    /// beside the binary, or `./dist`: the first that holds an index.html.
    pub fn find(flag: Option<PathBuf>) -> Result<Self> {
        let given = flag.or_else(|| std::env::var_os("INFERLAB_DIST").map(PathBuf::from));
        #[cfg(feature = "embed")]
        if given.is_none() {
            return Ok(Self::Embedded);
        }
        let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("dist")));
        let candidates: Vec<PathBuf> = match given {
            Some(dir) => vec![dir],
            None => beside.into_iter().chain([PathBuf::from("dist")]).collect(),
        };
        if let Some(dir) = candidates.iter().find(|d| d.join("index.html").is_file()) {
            return Ok(Self::Folder(dir.clone()));
        }
        let tried = candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
        bail!(
            "no built web app (index.html) in {tried}: build it with `trunk build --release` in the repository, then pass --dist DIR (or build inferlab with --features embed)"
        )
    }

    /// One file of the app, e.g. the demo model's tokenizer.
    pub fn read(&self, file: &str) -> Result<Vec<u8>> {
        match self {
            Self::Folder(dir) => {
                let path = dir.join(file);
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
            }
            #[cfg(feature = "embed")]
            Self::Embedded => EMBEDDED
                .get_file(file)
                .map(|f| f.contents().to_vec())
                .with_context(|| format!("the embedded web app has no {file}")),
        }
    }

    /// Serves the app's files after `routes`' own.
    pub fn serve(&self, routes: Router) -> Router {
        match self {
            Self::Folder(dir) => routes.fallback_service(ServeDir::new(dir)),
            #[cfg(feature = "embed")]
            Self::Embedded => routes.fallback(embedded_file),
        }
    }

    /// Where the files come from, in words.
    pub fn describe(&self) -> String {
        match self {
            Self::Folder(dir) => dir.display().to_string(),
            #[cfg(feature = "embed")]
            Self::Embedded => "the web app built into this binary".into(),
        }
    }
}

/// An embedded file by its URL path (`/` is index.html), with its content type.
#[cfg(feature = "embed")]
async fn embedded_file(uri: axum::http::Uri) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    match EMBEDDED.get_file(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            ([(header::CONTENT_TYPE, mime.as_ref())], file.contents()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
