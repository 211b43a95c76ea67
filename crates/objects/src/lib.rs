//! Where Hawker keeps its files (uploaded images), behind one interface, the
//! `object_store` crate's: by default a folder in the node's data directory,
//! exactly as before; with `--object-store-url file:///path`, a folder every
//! node mounts, so that a file one node wrote is served by all of them.
//!
//! Files are named by keys such as `images/ab/ab12...`, written once: a key
//! names one content forever (images are keyed by their SHA-256), so a second
//! write of it is no change.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The storage did not answer or refused (a missing mount, a full disk).
    #[error("the file storage is unavailable: {0}")]
    Unavailable(String),
    /// A key that is not a valid object name.
    #[error("not a valid file name: {0}")]
    BadKey(String),
}

/// What a `--object-store-url` cannot be.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0}: only file:///absolute/path object storage is supported")]
    Unsupported(String),
    #[error("{0}: {1}")]
    Unusable(String, String),
}

/// The node's file storage. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    /// Where the files go, for logs and `/readyz`.
    place: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("place", &self.place)
            .finish()
    }
}

impl Objects {
    /// Files under `dir`, which is made if missing.
    pub fn local(dir: &Path) -> Result<Self, UrlError> {
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir)
            .map_err(|e| UrlError::Unusable(shown.clone(), e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| UrlError::Unusable(shown.clone(), e.to_string()))?;
        Ok(Self {
            inner: Arc::new(store),
            place: shown,
        })
    }

    /// The storage a node uses: the one `url` names, or else its data
    /// directory.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, UrlError> {
        match url {
            Some(url) => Self::from_url(url),
            None => Self::local(data_dir),
        }
    }

    /// The storage a `--object-store-url` names: `file:///absolute/path`.
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let Some(path) = url.strip_prefix("file://").filter(|p| p.starts_with('/')) else {
            return Err(UrlError::Unsupported(url.to_owned()));
        };
        Self::local(Path::new(path))
    }

    /// Where the files go.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Writes `bytes` under `key` unless the key exists already (a key names
    /// one content). A reader never sees a partial file.
    pub async fn put_once(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let key = parse(key)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&key, PutPayload::from_bytes(bytes), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(unavailable(&key, e)),
        }
    }

    /// The content under `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        let key = parse(key)?;
        match self.inner.get(&key).await {
            Ok(found) => found
                .bytes()
                .await
                .map(Some)
                .map_err(|e| unavailable(&key, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(&key, e)),
        }
    }
}

fn parse(key: &str) -> Result<Key, ObjectError> {
    Key::parse(key).map_err(|e| ObjectError::BadKey(format!("{key}: {e}")))
}

fn unavailable(key: &Key, e: object_store::Error) -> ObjectError {
    tracing::warn!(%key, error = %e, "file storage failed");
    ObjectError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_key_is_written_once_and_read_back_from_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let one = Objects::from_url(&url).unwrap();
        let other = Objects::from_url(&url).unwrap();
        assert_eq!(other.get("images/ab/abc").await.unwrap(), None);
        one.put_once("images/ab/abc", Bytes::from_static(b"first"))
            .await
            .unwrap();
        // The same key again changes nothing.
        one.put_once("images/ab/abc", Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(
            other.get("images/ab/abc").await.unwrap().as_deref(),
            Some(&b"first"[..])
        );
        assert!(dir.path().join("images/ab/abc").is_file());
    }

    #[test]
    fn only_absolute_file_urls_are_taken() {
        for url in ["s3://bucket", "file://relative/path", "/no/scheme"] {
            assert!(
                matches!(Objects::from_url(url), Err(UrlError::Unsupported(_))),
                "{url}"
            );
        }
    }
}
