//! Where Hawker keeps its files (uploaded images, recordings), behind one
//! interface, the `object_store` crate's: by default a folder in the node's
//! data directory; with `--object-store-url file:///path`, a folder every node
//! mounts; with `s3://bucket[/prefix]`, S3 or any S3-compatible server (the
//! endpoint from `--object-store-endpoint`, credentials and region from the
//! standard `AWS_*` variables). A file one node wrote is served by all.
//!
//! Keys look like `images/ab/ab12...` or `recordings/rec_.../seg3-0-2000.m4s`.
//! A write is whole or absent: a reader never sees half a file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

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
    #[error("{0}: object storage is file:///absolute/path or s3://bucket[/prefix]")]
    Unsupported(String),
    #[error("{0}: {1}")]
    Unusable(String, String),
}

/// A file being read: its size, and its bytes as they come.
pub struct Download {
    pub size: u64,
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, ObjectError>>,
}

impl Download {
    /// A file already in memory.
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            size: bytes.len() as u64,
            stream: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
        }
    }

    /// All of it, at once.
    pub async fn bytes(self) -> Result<Bytes, ObjectError> {
        let chunks: Vec<Bytes> = self.stream.try_collect().await?;
        Ok(chunks.concat().into())
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .finish()
    }
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

    /// The storage a node uses: the one `url` names (S3 at `endpoint` when
    /// given), or else its data directory.
    pub fn open(
        url: Option<&str>,
        endpoint: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self, UrlError> {
        match url {
            Some(url) => Self::from_url(url, endpoint),
            None => Self::local(data_dir),
        }
    }

    /// The storage a `--object-store-url` names: `file:///absolute/path`, or
    /// `s3://bucket[/prefix]` (at `endpoint`, such as `http://127.0.0.1:9000`,
    /// for an S3-compatible server; AWS's own otherwise).
    pub fn from_url(url: &str, endpoint: Option<&str>) -> Result<Self, UrlError> {
        if let Some(path) = url.strip_prefix("file://").filter(|p| p.starts_with('/')) {
            return Self::local(Path::new(path));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(UrlError::Unsupported(url.to_owned()));
        };
        Self::s3(url, rest, endpoint, AmazonS3Builder::from_env())
    }

    /// `s3://{bucket_and_prefix}` with `builder`'s credentials.
    fn s3(
        url: &str,
        bucket_and_prefix: &str,
        endpoint: Option<&str>,
        builder: AmazonS3Builder,
    ) -> Result<Self, UrlError> {
        let (bucket, prefix) = bucket_and_prefix
            .split_once('/')
            .unwrap_or((bucket_and_prefix, ""));
        if bucket.is_empty() {
            return Err(UrlError::Unsupported(url.to_owned()));
        }
        use_ring();
        // A storage that does not answer is reported within seconds (an
        // upload's 503, a recording's local buffering), not after minutes.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(30));
        let mut builder = builder
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| UrlError::Unusable(url.to_owned(), e.to_string()))?;
        let place = match endpoint {
            Some(endpoint) => format!("{url} at {endpoint}"),
            None => url.to_owned(),
        };
        let inner: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => Arc::new(store),
            prefix => Arc::new(PrefixStore::new(store, prefix)),
        };
        Ok(Self { inner, place })
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

    /// Writes `bytes` under `key`, replacing what was there (a playlist
    /// rewritten whole).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let key = parse(key)?;
        self.inner
            .put(&key, PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| unavailable(&key, e))
    }

    /// The files under `prefix` (a folder: `recordings/rec_1`), with their
    /// sizes, by name.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let prefix = parse(prefix)?;
        let found: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| unavailable(&prefix, e))?;
        let mut files: Vec<_> = found
            .into_iter()
            .filter_map(|meta| Some((meta.location.filename()?.to_owned(), meta.size)))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Deletes every file under `prefix`.
    pub async fn delete_all(&self, prefix: &str) -> Result<(), ObjectError> {
        let prefix = parse(prefix)?;
        let keys: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| unavailable(&prefix, e))?;
        for key in keys {
            match self.inner.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(&key, e)),
            }
        }
        Ok(())
    }

    /// The content under `key`, or `None` when there is none.
    /// A file as it comes from the storage, for a response to stream rather
    /// than hold whole; `None` if there is none.
    pub async fn read(&self, key: &str) -> Result<Option<Download>, ObjectError> {
        let key = parse(key)?;
        match self.inner.get(&key).await {
            Ok(found) => {
                let size = found.meta.size;
                let stream = found
                    .into_stream()
                    .map_err(move |e| unavailable(&key, e))
                    .boxed();
                Ok(Some(Download { size, stream }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(&key, e)),
        }
    }

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

/// reqwest's TLS is built without a default crypto provider: ring it is.
fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn parse(key: &str) -> Result<Key, ObjectError> {
    Key::parse(key).map_err(|e| ObjectError::BadKey(format!("{key}: {e}")))
}

fn unavailable(key: &Key, e: object_store::Error) -> ObjectError {
    tracing::warn!(%key, error = %e, "file storage failed");
    ObjectError::Unavailable(e.to_string())
}

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_key_is_written_once_and_read_back_from_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let one = Objects::from_url(&url, None).unwrap();
        let other = Objects::from_url(&url, None).unwrap();
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

    #[tokio::test]
    async fn an_s3_bucket_keeps_lists_and_deletes_files() {
        let s3 = testing::S3::start().await;
        let one = s3.objects("recordings");
        let other = s3.objects("recordings");
        one.put_once("rec_1/seg0-0-1000.m4s", Bytes::from_static(b"media"))
            .await
            .unwrap();
        one.put_once("rec_1/seg0-0-1000.m4s", Bytes::from_static(b"other"))
            .await
            .unwrap();
        one.put("rec_1/index.m3u8", Bytes::from_static(b"#EXTM3U"))
            .await
            .unwrap();
        one.put("rec_2/index.m3u8", Bytes::from_static(b"#EXTM3U"))
            .await
            .unwrap();
        assert_eq!(
            other.get("rec_1/seg0-0-1000.m4s").await.unwrap().as_deref(),
            Some(&b"media"[..])
        );
        assert_eq!(
            other.list("rec_1").await.unwrap(),
            [
                ("index.m3u8".to_owned(), 7),
                ("seg0-0-1000.m4s".to_owned(), 5)
            ]
        );
        other.delete_all("rec_1").await.unwrap();
        assert!(one.list("rec_1").await.unwrap().is_empty());
        assert_eq!(one.get("rec_1/index.m3u8").await.unwrap(), None);
        assert_eq!(one.list("rec_2").await.unwrap().len(), 1);
        // Everything sits under the URL's prefix in the bucket.
        assert_eq!(
            s3.objects("").list("recordings/rec_2").await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn an_s3_server_that_is_gone_is_unavailable() {
        let s3 = testing::S3::start().await;
        let objects = s3.objects("");
        drop(s3);
        assert!(matches!(
            objects.get("images/ab/abc").await,
            Err(ObjectError::Unavailable(_))
        ));
    }

    #[test]
    fn only_absolute_file_urls_and_s3_buckets_are_taken() {
        for url in ["s3://", "file://relative/path", "/no/scheme", "gs://bucket"] {
            assert!(
                matches!(Objects::from_url(url, None), Err(UrlError::Unsupported(_))),
                "{url}"
            );
        }
    }
}
