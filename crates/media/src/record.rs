//! Recordings: every live is written as fMP4 HLS VOD to the node's file
//! storage (the data directory, a shared folder or S3), under
//! `recordings/{recording}/`, one file per segment as the segment completes.
//! A segment's name says all the playlist needs of it
//! (`seg{index}-{generation}-{duration_ms}.m4s`), so the playlist of a
//! recording still being made is the listing of its files, and closing one a
//! crash left open needs nothing but them. The VOD playlist is written when
//! the recording completes.
//!
//! Each recording has its own writer task, off the media path. When the
//! storage does not answer, the segments wait in memory (up to
//! [`Settings::recording_buffer`](crate::Settings) bytes for the node) and are
//! uploaded when it does; past that, the oldest waiting segment is dropped,
//! logged and counted, and the playlist marks the gap with a discontinuity.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use domain::Timestamp;
use domain::ids::{RecordingId, RoomId};
use objects::{ObjectError, Objects};
use store::{RecordingProgress, Store};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::hls::Segment;

/// Writes recordings. Cheap to clone.
#[derive(Clone)]
pub struct Recorder(Arc<Inner>);

struct Inner {
    store: Store,
    objects: Objects,
    /// Segment bytes waiting for the storage, over every recording.
    waiting: AtomicUsize,
    buffer: usize,
    writers: Mutex<JoinSet<()>>,
}

enum Job {
    Segments(Vec<Arc<Segment>>),
    Finish,
    /// The stream went on on another node, which writes the rest: stop at
    /// once (what is still queued would take the numbers that node's
    /// segments take), leaving the recording open.
    Leave,
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
            let _ = self.jobs.send(Job::Segments(segments));
        }
    }

    pub fn finish(&self) {
        let _ = self.jobs.send(Job::Finish);
    }

    /// Another node goes on with the recording.
    pub fn leave(&self) {
        let _ = self.jobs.send(Job::Leave);
    }
}

/// How often a writer tells the recording's row how far it got, and that it
/// is still there. The files are the record; the row's progress is a summary.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A recording whose writer has not been heard from for this long lost it (its
/// node died): any node closes it with what its files hold.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(30);

impl Recorder {
    /// `buffer`: segment bytes held for a storage that does not answer.
    pub fn new(store: Store, objects: Objects, buffer: usize) -> Self {
        Self(Arc::new(Inner {
            store,
            objects,
            waiting: AtomicUsize::new(0),
            buffer,
            writers: Mutex::new(JoinSet::new()),
        }))
    }

    /// Starts a recording of `room` whose first frame is at `started`; `None`
    /// (and a log line) if the store cannot take it: the live goes on unrecorded.
    pub async fn start(&self, room: &RoomId, started: Timestamp) -> Option<Recording> {
        let id = RecordingId::generate();
        if let Err(e) = self.0.store.create_recording(&id, room, started).await {
            tracing::error!(%room, error = %e, "could not start a recording");
            return None;
        }
        Some(self.write_to(id, 0, HashSet::new(), RecordingProgress::default(), false))
    }

    /// Goes on with a recording another node was making (the stream moved
    /// here): its next segment follows the last one in the storage. `None`
    /// if the storage cannot say what it holds or the recording is over.
    pub async fn resume(&self, id: RecordingId) -> Option<Recording> {
        let open = self.0.store.recording(&id).await.ok().flatten()?.recording;
        let listing = Listing::read(&self.0.objects, &prefix(&id)).await;
        let listing = match listing {
            Ok(listing) if open => listing,
            Ok(_) => return None,
            Err(e) => {
                tracing::error!(recording = %id, error = %e, "could not go on with a recording");
                return None;
            }
        };
        let next = listing.entries.last().map_or(0, |e| e.index + 1);
        let inits = listing.entries.iter().map(|e| e.generation).collect();
        Some(self.write_to(id, next, inits, listing.progress, true))
    }

    fn write_to(
        &self,
        id: RecordingId,
        next_index: u64,
        inits: HashSet<u32>,
        progress: RecordingProgress,
        started: bool,
    ) -> Recording {
        let (jobs, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            recorder: self.clone(),
            id: id.clone(),
            prefix: prefix(&id),
            queue,
            waiting: VecDeque::new(),
            inits,
            next_index,
            progress,
            started,
        };
        self.writers().spawn(writer.run());
        Recording { id, jobs }
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.0.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (up to 10 s) until what was sent so far is written (on shutdown).
    pub async fn stop(&self) {
        let mut writers = std::mem::take(&mut *self.writers());
        let all = async { while writers.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("recordings still uploading at shutdown are left for recovery");
        }
    }

    /// A file of a recording, as its playlist names it: the playlist of one
    /// still being made is made from its files. `None` if there is none.
    pub async fn file(
        &self,
        id: &RecordingId,
        name: &str,
    ) -> Result<Option<objects::Download>, ObjectError> {
        if !is_file_name(name) {
            return Ok(None);
        }
        let prefix = prefix(id);
        let found = self.0.objects.read(&format!("{prefix}/{name}")).await?;
        if found.is_some() || name != PLAYLIST {
            return Ok(found);
        }
        let listing = Listing::read(&self.0.objects, &prefix).await?;
        Ok((!listing.entries.is_empty())
            .then(|| objects::Download::whole(listing.playlist(false).into())))
    }

    /// Closes recordings whose writer has not been heard from for `silent`
    /// (its node crashed), with what their files hold. Every node runs this
    /// now and then; closing twice is the same as once.
    pub async fn recover(&self, silent: Duration) {
        let before = Timestamp::now().plus_millis(-(silent.as_millis() as i64));
        let Ok(abandoned) = self.0.store.abandoned_recordings(before).await else {
            return;
        };
        for recording in abandoned {
            match self.close(&recording.id).await {
                Ok(progress) => {
                    let ended = recording.started_at.plus_millis(progress.duration_ms);
                    if let Err(e) = self
                        .0
                        .store
                        .update_recording(&recording.id, progress, Some(ended))
                        .await
                    {
                        tracing::warn!(recording = %recording.id, error = %e, "could not close a recording");
                    } else {
                        tracing::info!(recording = %recording.id, "closed a recording its writer left open");
                    }
                }
                Err(e) => {
                    tracing::warn!(recording = %recording.id, error = %e, "could not close a recording's playlist")
                }
            }
        }
    }

    /// Writes the VOD playlist of what the recording's files hold, and says
    /// what that is.
    async fn close(&self, id: &RecordingId) -> Result<RecordingProgress, ObjectError> {
        let prefix = prefix(id);
        let listing = Listing::read(&self.0.objects, &prefix).await?;
        if !listing.entries.is_empty() {
            self.0
                .objects
                .put(
                    &format!("{prefix}/{PLAYLIST}"),
                    listing.playlist(true).into(),
                )
                .await?;
        }
        Ok(listing.progress)
    }

    /// Deletes a recording's files and row.
    pub async fn delete(&self, id: &RecordingId) -> Result<bool, store::StoreError> {
        if let Err(e) = self.0.objects.delete_all(&prefix(id)).await {
            tracing::warn!(recording = %id, error = %e, "could not delete a recording's files");
        }
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

const PLAYLIST: &str = "index.m3u8";

fn prefix(id: &RecordingId) -> String {
    format!("recordings/{id}")
}

/// A name a recording's playlist may give: its playlist, an init segment, or
/// a segment (`seg3-0-2000.m4s`, or `seg3.m4s` as earlier versions wrote).
pub fn is_file_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() < 20 && s.bytes().all(|b| b.is_ascii_digit());
    name == PLAYLIST
        || name
            .strip_prefix("init")
            .and_then(|n| n.strip_suffix(".mp4"))
            .is_some_and(digits)
        || name
            .strip_prefix("seg")
            .and_then(|n| n.strip_suffix(".m4s"))
            .is_some_and(|n| n.split('-').count() <= 3 && n.split('-').all(digits))
}

/// A segment file, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    index: u64,
    generation: u32,
    duration_ms: i64,
}

impl Entry {
    fn name(&self) -> String {
        format!(
            "seg{}-{}-{}.m4s",
            self.index, self.generation, self.duration_ms
        )
    }

    fn parse(name: &str) -> Option<Self> {
        let mut fields = name.strip_prefix("seg")?.strip_suffix(".m4s")?.split('-');
        let entry = Self {
            index: fields.next()?.parse().ok()?,
            generation: fields.next()?.parse().ok()?,
            duration_ms: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(entry)
    }
}

/// What a recording's files hold.
struct Listing {
    entries: Vec<Entry>,
    progress: RecordingProgress,
}

impl Listing {
    async fn read(objects: &Objects, prefix: &str) -> Result<Self, ObjectError> {
        let mut entries = Vec::new();
        let mut progress = RecordingProgress::default();
        for (name, size) in objects.list(prefix).await? {
            if let Some(entry) = Entry::parse(&name) {
                progress.duration_ms += entry.duration_ms;
                progress.segments += 1;
                progress.bytes += size as i64;
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.index);
        Ok(Self { entries, progress })
    }

    /// The playlist: `complete`, a VOD one that ends; else an EVENT one that
    /// grows. A new init segment, or a segment lost on the way, is a
    /// discontinuity.
    fn playlist(&self, complete: bool) -> String {
        let longest = self
            .entries
            .iter()
            .map(|e| e.duration_ms)
            .max()
            .unwrap_or(1000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-PLAYLIST-TYPE:{}\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            (longest.max(1) + 999) / 1000,
            if complete { "VOD" } else { "EVENT" }
        );
        let mut previous: Option<&Entry> = None;
        for entry in &self.entries {
            let new_init = previous.is_none_or(|p| p.generation != entry.generation);
            if previous.is_some_and(|p| new_init || p.index + 1 != entry.index) {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if new_init {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"init{}.mp4\"", entry.generation);
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}\n",
                entry.duration_ms as f64 / 1000.0,
                entry.name()
            );
            previous = Some(entry);
        }
        if complete {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// A file waiting for the storage.
struct Upload {
    key: String,
    bytes: Bytes,
    /// A segment (counted in the progress once written); `None`: an init
    /// segment, never dropped.
    segment: Option<Entry>,
}

/// One recording's writer.
struct Writer {
    recorder: Recorder,
    id: RecordingId,
    prefix: String,
    queue: mpsc::UnboundedReceiver<Job>,
    waiting: VecDeque<Upload>,
    inits: HashSet<u32>,
    next_index: u64,
    progress: RecordingProgress,
    started: bool,
}

/// The longest a writer waits before trying a storage that failed again.
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Writer {
    async fn run(mut self) {
        let mut finishing = None;
        let mut retry = Duration::from_millis(250);
        let mut heartbeat = tokio::time::interval(PROGRESS_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Ok(job) = self.queue.try_recv() {
                finishing = finishing.or(self.take(job).await);
            }
            if matches!(finishing, Some(Job::Leave)) {
                return self.save_progress().await;
            }
            if let Some(upload) = self.waiting.front() {
                match self
                    .recorder
                    .0
                    .objects
                    .put_once(&upload.key, upload.bytes.clone())
                    .await
                {
                    Ok(()) => {
                        self.uploaded();
                        retry = Duration::from_millis(250);
                        continue;
                    }
                    Err(e) => {
                        metrics::counter!("hawker_recording_errors_total").increment(1);
                        tracing::warn!(recording = %self.id, error = %e, waiting = self.waiting.len(), "recording upload failed; will retry");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = heartbeat.tick() => self.save_progress().await,
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
            if finishing.is_some() {
                break;
            }
            tokio::select! {
                job = self.queue.recv() => match job {
                    Some(job) => finishing = self.take(job).await,
                    None => finishing = Some(Job::Finish),
                },
                _ = heartbeat.tick() => self.save_progress().await,
            }
        }
        self.complete().await;
    }

    /// Queues a job's files; the job itself when it ends the writing.
    async fn take(&mut self, job: Job) -> Option<Job> {
        let segments = match job {
            Job::Finish | Job::Leave => return Some(job),
            Job::Segments(segments) => segments,
        };
        if !self.started
            && let Some(first) = segments.first()
        {
            self.started = true;
            let at = Timestamp::from_millis(first.wall_ms);
            if let Err(e) = self
                .recorder
                .0
                .store
                .set_recording_start(&self.id, at)
                .await
            {
                tracing::warn!(recording = %self.id, error = %e, "could not record when a recording started");
            }
        }
        for segment in segments {
            if self.inits.insert(segment.generation) {
                self.waiting.push_back(Upload {
                    key: format!("{}/init{}.mp4", self.prefix, segment.generation),
                    bytes: segment.init.clone(),
                    segment: None,
                });
            }
            let entry = Entry {
                index: self.next_index,
                generation: segment.generation,
                duration_ms: segment.duration_ms,
            };
            self.next_index += 1;
            self.recorder
                .0
                .waiting
                .fetch_add(segment.data.len(), Ordering::Relaxed);
            self.waiting.push_back(Upload {
                key: format!("{}/{}", self.prefix, entry.name()),
                bytes: segment.data.clone(),
                segment: Some(entry),
            });
        }
        self.drop_over_buffer();
        None
    }

    /// Past the node's buffer, the oldest waiting segment goes.
    fn drop_over_buffer(&mut self) {
        let waiting = &self.recorder.0.waiting;
        while waiting.load(Ordering::Relaxed) > self.recorder.0.buffer {
            let Some(at) = self.waiting.iter().position(|u| u.segment.is_some()) else {
                return;
            };
            let Some(gone) = self.waiting.remove(at) else {
                return;
            };
            waiting.fetch_sub(gone.bytes.len(), Ordering::Relaxed);
            metrics::counter!("hawker_recording_segments_dropped_total").increment(1);
            tracing::error!(recording = %self.id, key = %gone.key, "the file storage is unavailable and the recording buffer is full: a segment is lost");
        }
    }

    fn uploaded(&mut self) {
        let Some(done) = self.waiting.pop_front() else {
            return;
        };
        if let Some(entry) = done.segment {
            self.recorder
                .0
                .waiting
                .fetch_sub(done.bytes.len(), Ordering::Relaxed);
            self.progress.duration_ms += entry.duration_ms;
            self.progress.segments += 1;
            self.progress.bytes += done.bytes.len() as i64;
        }
    }

    async fn save_progress(&self) {
        if let Err(e) = self
            .recorder
            .0
            .store
            .update_recording(&self.id, self.progress, None)
            .await
        {
            tracing::warn!(recording = %self.id, error = %e, "could not record a recording's progress");
        }
    }

    /// Everything is written: the VOD playlist, then the row says complete.
    async fn complete(self) {
        let progress = match self.recorder.close(&self.id).await {
            Ok(progress) => progress,
            Err(e) => {
                tracing::error!(recording = %self.id, error = %e, "could not close a recording: it is left for recovery");
                return;
            }
        };
        match self
            .recorder
            .0
            .store
            .update_recording(&self.id, progress, Some(Timestamp::now()))
            .await
        {
            Ok(()) => tracing::info!(
                recording = %self.id,
                seconds = progress.duration_ms / 1000,
                segments = progress.segments,
                "recording complete"
            ),
            Err(e) => {
                tracing::warn!(recording = %self.id, error = %e, "could not close a recording")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::{Hls, Settings};
    use store::testing::TestDatabase;

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
                1_000 + n * 1000 / 30,
            );
        }
        hls.take_completed()
    }

    /// A file of the recording, whole.
    async fn read(recorder: &Recorder, id: &RecordingId, name: &str) -> Option<Bytes> {
        let found = recorder.file(id, name).await.expect("readable")?;
        Some(found.bytes().await.expect("readable"))
    }

    async fn vod_of(recorder: &Recorder, id: &RecordingId) -> String {
        let vod = read(recorder, id, PLAYLIST).await;
        String::from_utf8(vod.expect("a playlist").to_vec()).expect("text")
    }

    /// A recording of three segments on `objects`; `crash`: its node dies
    /// once they are written, and another node closes it.
    async fn record(objects: Objects, crash: bool) {
        let db = TestDatabase::sqlite().await;
        let store = db.store.clone();
        let room = store::testing::room(&store).await;
        let recorder = Recorder::new(store.clone(), objects.clone(), 1 << 20);
        let recording = recorder
            .start(&room, Timestamp::from_millis(1_000))
            .await
            .expect("started");
        let id = recording.id.clone();
        recording.write(segments());
        let growing = loop {
            let playlist = read(&recorder, &id, PLAYLIST).await;
            if let Some(p) = playlist.filter(|p| p.windows(3).filter(|w| w == b"seg").count() == 3)
            {
                break String::from_utf8(p.to_vec()).expect("text");
            }
            tokio::task::yield_now().await;
        };
        assert!(growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !growing.contains("ENDLIST"));
        if crash {
            recorder.writers().abort_all();
            let other = Recorder::new(store.clone(), objects, 1 << 20);
            // Silent for no time at all: once the clock has moved past the
            // writer's last heartbeat, which may be this very millisecond.
            loop {
                other.recover(Duration::ZERO).await;
                if !store
                    .recording(&id)
                    .await
                    .expect("read")
                    .expect("a row")
                    .recording
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
        } else {
            recording.finish();
            recorder.stop().await;
        }
        let row = store.recording(&id).await.expect("read").expect("a row");
        assert!(!row.recording, "complete");
        assert_eq!((row.segments, row.duration_ms), (3, 3000));
        assert_eq!(row.started_at, Timestamp::from_millis(1_000));
        let vod = vod_of(&recorder, &id).await;
        assert!(
            vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"),
            "{vod}"
        );
        for name in ["init0.mp4", "seg0-0-1000.m4s", "seg2-0-1000.m4s"] {
            assert!(vod.contains(name), "{name} in {vod}");
            assert!(
                recorder.file(&id, name).await.expect("readable").is_some(),
                "{name}"
            );
        }
        assert!(recorder.delete(&id).await.expect("deleted"));
        assert_eq!(read(&recorder, &id, PLAYLIST).await, None);
    }

    #[tokio::test]
    async fn a_recording_is_written_and_closed_on_the_data_directory_and_on_s3() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        record(Objects::local(dir.path()).expect("a folder"), false).await;
        let s3 = objects::testing::S3::start().await;
        record(s3.objects(""), false).await;
    }

    #[tokio::test]
    async fn segments_wait_for_a_storage_that_is_down_within_the_buffer() {
        let db = TestDatabase::sqlite().await;
        let store = db.store.clone();
        let room = store::testing::room(&store).await;
        let mut s3 = objects::testing::S3::start().await;
        let made = segments();
        // Room for two of the three segments while the storage is down.
        let buffer = made[1].data.len() + made[2].data.len();
        let recorder = Recorder::new(store.clone(), s3.objects(""), buffer);
        let recording = recorder
            .start(&room, Timestamp::from_millis(1_000))
            .await
            .expect("started");
        s3.stop();
        recording.write(made);
        recording.finish();
        let id = recording.id.clone();
        // Queued: the oldest segment had no room.
        while recorder.0.waiting.load(Ordering::Relaxed) != buffer {
            tokio::task::yield_now().await;
        }
        s3.resume().await;
        let row = loop {
            let row = store.recording(&id).await.expect("read").expect("a row");
            if !row.recording {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            (row.segments, row.duration_ms),
            (2, 2000),
            "the oldest was dropped"
        );
        let vod = vod_of(&recorder, &id).await;
        assert!(
            !vod.contains("seg0-")
                && vod.contains("seg1-0-1000.m4s")
                && vod.contains("seg2-0-1000.m4s"),
            "{vod}"
        );
        assert_eq!(recorder.0.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_recording_its_node_lost_is_closed_by_another_on_both_storages() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        record(Objects::local(dir.path()).expect("a folder"), true).await;
        let s3 = objects::testing::S3::start().await;
        record(s3.objects("prefix"), true).await;
    }

    fn entry(index: u64, generation: u32) -> Entry {
        Entry {
            index,
            generation,
            duration_ms: 2000,
        }
    }

    #[test]
    fn a_segment_name_says_what_the_playlist_needs() {
        let e = Entry {
            index: 12,
            generation: 1,
            duration_ms: 1966,
        };
        assert_eq!(e.name(), "seg12-1-1966.m4s");
        assert_eq!(Entry::parse(&e.name()), Some(e));
        for bad in [
            "seg1-2.m4s",
            "seg1-2-3-4.m4s",
            "seg-1-2.m4s",
            "segx.m4s",
            "init0.mp4",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
        for good in ["index.m3u8", "init0.mp4", "seg3.m4s", "seg12-1-1966.m4s"] {
            assert!(is_file_name(good), "{good}");
        }
        for bad in [
            "../index.m3u8",
            "init.mp4",
            "seg1-2-3-4.m4s",
            "part1.0.m4s",
            "x",
        ] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_playlist_marks_new_init_segments_and_lost_segments() {
        let listing = Listing {
            entries: vec![entry(0, 0), entry(1, 0), entry(2, 1), entry(4, 1)],
            progress: RecordingProgress::default(),
        };
        let vod = listing.playlist(true);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY").count(), 2);
        assert!(
            vod.contains("seg1-0-2000.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n")
        );
        assert!(
            vod.contains("seg2-1-2000.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg4-1-2000.m4s")
        );
        let event = listing.playlist(false);
        assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !event.contains("ENDLIST"));
    }
}
