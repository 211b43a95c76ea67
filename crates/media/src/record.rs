//! Recordings: every live is written as fMP4 HLS VOD under
//! `{recordings_dir}/{recording}/`, one file per segment as the segment
//! completes and the playlist rewritten (atomically) after it, so a crash loses
//! at most the segment being made. One task writes for every stream, off the
//! media path.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::Timestamp;
use domain::ids::{RecordingId, RoomId};
use store::{RecordingProgress, Store};
use tokio::sync::mpsc;

use crate::hls::Segment;

/// Writes recordings. Cheap to clone.
#[derive(Clone)]
pub struct Recorder(Arc<Inner>);

struct Inner {
    store: Store,
    dir: PathBuf,
    jobs: mpsc::UnboundedSender<Job>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

enum Job {
    Segments(RecordingId, Vec<Arc<Segment>>),
    Finish(RecordingId),
    /// Write what came before, then stop.
    Stop,
}

/// A stream's handle on its recording.
#[derive(Clone)]
pub struct Recording {
    pub id: RecordingId,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Recording {
    pub fn write(&self, segments: Vec<Arc<Segment>>) {
        if !segments.is_empty() {
            let _ = self.jobs.send(Job::Segments(self.id.clone(), segments));
        }
    }

    pub fn finish(&self) {
        let _ = self.jobs.send(Job::Finish(self.id.clone()));
    }
}

impl Recorder {
    pub fn new(store: Store, dir: PathBuf) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_all(store.clone(), dir.clone(), queue));
        Self(Arc::new(Inner {
            store,
            dir,
            jobs,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Where a recording's files are.
    pub fn path(&self, id: &RecordingId) -> PathBuf {
        self.0.dir.join(id.as_str())
    }

    /// Starts a recording of `room` whose first frame is at `started`; `None`
    /// (and a log line) if the store cannot take it: the live goes on unrecorded.
    pub async fn start(&self, room: &RoomId, started: Timestamp) -> Option<Recording> {
        let id = RecordingId::generate();
        match self.0.store.create_recording(&id, room, started).await {
            Ok(()) => Some(Recording {
                id,
                jobs: self.0.jobs.clone(),
            }),
            Err(e) => {
                tracing::error!(%room, error = %e, "could not start a recording");
                None
            }
        }
    }

    /// Waits until everything sent so far is written (on shutdown).
    pub async fn stop(&self) {
        let writer = self
            .0
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = self.0.jobs.send(Job::Stop);
            let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        }
    }

    /// Marks recordings left unfinished by a crash as complete, with what
    /// their playlists hold.
    pub async fn recover(&self) {
        let Ok(unfinished) = self.0.store.unfinished_recordings().await else {
            return;
        };
        for recording in unfinished {
            let dir = self.path(&recording.id);
            let closed = tokio::task::spawn_blocking(move || close_playlist(&dir)).await;
            let progress = match closed.map_err(std::io::Error::other) {
                Ok(Ok(progress)) => progress,
                Err(e) | Ok(Err(e)) => {
                    tracing::warn!(recording = %recording.id, error = %e, "could not close a recording's playlist");
                    RecordingProgress {
                        duration_ms: recording.duration_ms,
                        segments: recording.segments,
                        bytes: recording.bytes,
                    }
                }
            };
            let ended = recording.started_at.plus_millis(recording.duration_ms);
            if let Err(e) = self
                .0
                .store
                .update_recording(&recording.id, progress, Some(ended))
                .await
            {
                tracing::warn!(recording = %recording.id, error = %e, "could not close a recording");
            } else {
                tracing::info!(recording = %recording.id, "closed a recording a crash left open");
            }
        }
    }

    /// Deletes a recording's files and row.
    pub async fn delete(&self, id: &RecordingId) -> Result<bool, store::StoreError> {
        let dir = self.path(id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.0.store.delete_recording(id).await
    }

    /// Deletes complete recordings older than `keep`.
    pub async fn sweep(&self, keep: Duration) -> usize {
        let before = Timestamp::now().plus_millis(-(keep.as_millis() as i64));
        let Ok(old) = self.0.store.recordings_started_before(before).await else {
            return 0;
        };
        let mut deleted = 0;
        for recording in old {
            if self.delete(&recording.id).await.unwrap_or(false) {
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "deleted recordings past their retention");
        }
        deleted
    }
}

struct Entry {
    name: String,
    duration_ms: i64,
    generation: u32,
}

#[derive(Default)]
struct Files {
    entries: Vec<Entry>,
    inits: HashSet<u32>,
    progress: RecordingProgress,
    /// When the row last heard of the progress.
    saved: Option<std::time::Instant>,
}

/// How often a recording's row is told how far it got. The files are the
/// record: after a crash, the playlist on disk says what was kept.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

async fn write_all(store: Store, dir: PathBuf, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut open: HashMap<RecordingId, Files> = HashMap::new();
    while let Some(job) = queue.recv().await {
        match job {
            Job::Segments(id, segments) => {
                let files = open.entry(id.clone()).or_default();
                if files.entries.is_empty()
                    && let Some(first) = segments.first()
                    && let Err(e) = store
                        .set_recording_start(&id, Timestamp::from_millis(first.wall_ms))
                        .await
                {
                    tracing::warn!(recording = %id, error = %e, "could not record when a recording started");
                }
                let path = dir.join(id.as_str());
                let written = write_segments(&path, files, &segments);
                if let Err(e) = written {
                    metrics::counter!("hawker_recording_errors_total").increment(1);
                    tracing::error!(recording = %id, error = %e, "could not write a recording");
                    continue;
                }
                if files.saved.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                    files.saved = Some(std::time::Instant::now());
                    if let Err(e) = store.update_recording(&id, files.progress, None).await {
                        tracing::warn!(recording = %id, error = %e, "could not record a recording's progress");
                    }
                }
            }
            Job::Stop => break,
            Job::Finish(id) => {
                let files = open.remove(&id).unwrap_or_default();
                let path = dir.join(id.as_str());
                if !files.entries.is_empty()
                    && let Err(e) = write_playlist(&path, &files, true)
                {
                    tracing::error!(recording = %id, error = %e, "could not close a recording");
                }
                let ended = Timestamp::now();
                match store
                    .update_recording(&id, files.progress, Some(ended))
                    .await
                {
                    Ok(()) => tracing::info!(
                        recording = %id,
                        seconds = files.progress.duration_ms / 1000,
                        segments = files.progress.segments,
                        "recording complete"
                    ),
                    Err(e) => {
                        tracing::warn!(recording = %id, error = %e, "could not close a recording")
                    }
                }
            }
        }
    }
}

/// The playlist's target duration while recording: the real one is known at
/// the end (when it is rewritten); this covers GOPs of up to ten seconds.
const EVENT_TARGET_MS: i64 = 10_000;

/// Writes the segments' files and appends them to the playlist: a few lines per
/// segment, however long the live (a crash can cut at most the last line,
/// which recovery drops).
fn write_segments(dir: &Path, files: &mut Files, segments: &[Arc<Segment>]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut lines = String::new();
    if files.entries.is_empty() {
        let longest = segments.iter().map(|s| s.duration_ms).max().unwrap_or(0);
        lines.push_str(&header(longest.max(EVENT_TARGET_MS), false));
    }
    for segment in segments {
        if files.inits.insert(segment.generation) {
            std::fs::write(
                dir.join(format!("init{}.mp4", segment.generation)),
                &segment.init,
            )?;
        }
        let name = format!("seg{}.m4s", files.entries.len());
        std::fs::write(dir.join(&name), &segment.data)?;
        let entry = Entry {
            name,
            duration_ms: segment.duration_ms,
            generation: segment.generation,
        };
        lines.push_str(&entry_lines(
            files.entries.last().map(|e| e.generation),
            &entry,
        ));
        files.entries.push(entry);
        files.progress.duration_ms += segment.duration_ms;
        files.progress.segments += 1;
        files.progress.bytes += segment.data.len() as i64;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("index.m3u8"))?
        .write_all(lines.as_bytes())
}

fn header(longest_ms: i64, complete: bool) -> String {
    format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-PLAYLIST-TYPE:{}\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        (longest_ms.max(1) + 999) / 1000,
        if complete { "VOD" } else { "EVENT" }
    )
}

/// An entry's lines, with the init segment it needs when that changes.
fn entry_lines(previous_generation: Option<u32>, entry: &Entry) -> String {
    let mut out = String::new();
    if previous_generation != Some(entry.generation) {
        if previous_generation.is_some() {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"init{}.mp4\"", entry.generation);
    }
    let _ = write!(
        out,
        "#EXTINF:{:.3},\n{}\n",
        entry.duration_ms as f64 / 1000.0,
        entry.name
    );
    out
}

/// Rewrites the whole playlist, atomically.
fn write_playlist(dir: &Path, files: &Files, complete: bool) -> std::io::Result<()> {
    let longest = files
        .entries
        .iter()
        .map(|e| e.duration_ms)
        .max()
        .unwrap_or(1000);
    let mut out = header(longest, complete);
    let mut generation = None;
    for entry in &files.entries {
        out.push_str(&entry_lines(generation, entry));
        generation = Some(entry.generation);
    }
    if complete {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    let tmp = dir.join("index.m3u8.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, dir.join("index.m3u8"))
}

/// Ends a playlist a crash left open, keeping the segments whose files are
/// whole on disk; returns what it holds.
fn close_playlist(dir: &Path) -> std::io::Result<RecordingProgress> {
    let text = match std::fs::read_to_string(dir.join("index.m3u8")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RecordingProgress::default());
        }
        Err(e) => return Err(e),
    };
    let mut files = Files::default();
    let mut generation = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(g) = line
            .strip_prefix("#EXT-X-MAP:URI=\"init")
            .and_then(|l| l.strip_suffix(".mp4\""))
            .and_then(|g| g.parse().ok())
        {
            generation = g;
        }
        let Some(seconds) = line
            .strip_prefix("#EXTINF:")
            .and_then(|d| d.trim_end_matches(',').parse::<f64>().ok())
        else {
            continue;
        };
        let Some(name) = lines
            .next()
            .filter(|n| n.starts_with("seg") && n.ends_with(".m4s"))
        else {
            break;
        };
        let Ok(meta) = std::fs::metadata(dir.join(name)) else {
            break;
        };
        let duration_ms = (seconds * 1000.0).round() as i64;
        files.progress.duration_ms += duration_ms;
        files.progress.segments += 1;
        files.progress.bytes += meta.len() as i64;
        files.entries.push(Entry {
            name: name.to_owned(),
            duration_ms,
            generation,
        });
    }
    write_playlist(dir, &files, true)?;
    Ok(files.progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::{Hls, Settings};
    use bytes::Bytes;

    /// Three one-second segments, as a live makes them.
    fn segments() -> Vec<Arc<Segment>> {
        let mut hls = Hls::new(Settings::default(), String::new());
        hls.set_video(crate::flv::AvcConfig::parse(crate::flv::tests::record()).expect("valid"));
        for n in 0..=90 {
            hls.push_video(
                n * 1000 / 30,
                0,
                n % 30 == 0,
                Bytes::from_static(&[0, 0, 0, 1, 5]),
                0,
            );
        }
        hls.take_completed()
    }

    #[test]
    fn a_crash_keeps_every_written_segment_and_recovery_closes_the_playlist() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut files = Files::default();
        write_segments(dir.path(), &mut files, &segments()).expect("written");
        let open = std::fs::read_to_string(dir.path().join("index.m3u8")).expect("a playlist");
        assert!(open.contains("#EXT-X-PLAYLIST-TYPE:EVENT"));
        assert!(!open.contains("#EXT-X-ENDLIST"));
        // The process dies here; on the next start the playlist is closed.
        let progress = close_playlist(dir.path()).expect("closed");
        assert_eq!((progress.segments, progress.duration_ms), (3, 3000));
        assert_eq!(progress.bytes, files.progress.bytes);
        let closed = std::fs::read_to_string(dir.path().join("index.m3u8")).expect("a playlist");
        assert!(closed.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        assert!(closed.ends_with("#EXT-X-ENDLIST\n"));
        assert!(dir.path().join("init0.mp4").exists());
        assert_eq!(close_playlist(dir.path()).expect("idempotent"), progress);

        // A crash in the middle of an append leaves half a line: it is dropped.
        let mut files = Files::default();
        let other = tempfile::tempdir().expect("a temporary directory");
        write_segments(other.path(), &mut files, &segments()).expect("written");
        let playlist = other.path().join("index.m3u8");
        let mut text = std::fs::read_to_string(&playlist).expect("a playlist");
        text.push_str("#EXTINF:1.000,\nseg3.m");
        std::fs::write(&playlist, text).expect("written");
        assert_eq!(close_playlist(other.path()).expect("closed").segments, 3);
    }
}
