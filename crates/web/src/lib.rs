//! The web app's files, built from `web/` at compile time and embedded in the
//! binary: the HTML pages (`index.html`, `room.html`, `studio.html`,
//! `orders.html`, `embed.html`) and the content-hashed scripts and styles under
//! `assets/`.

/// One built file. `gzip` is its gzip encoding, kept when it is smaller.
pub struct Asset {
    /// Relative to the build's root, such as `room.html` or `assets/room-1a2b3c.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The built file at `path`, if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .map(|i| &ASSETS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_built_and_the_table_is_sorted() {
        for page in [
            "index.html",
            "room.html",
            "studio.html",
            "orders.html",
            "embed.html",
        ] {
            let html = asset(page).unwrap_or_else(|| panic!("{page} is built"));
            assert!(html.content_type.starts_with("text/html"));
            let text = std::str::from_utf8(html.body).unwrap_or_default();
            assert!(text.contains("/assets/"), "{page} loads its script");
        }
        assert!(ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        assert!(
            ASSETS
                .iter()
                .any(|a| a.path.ends_with(".js") && a.gzip.is_some())
        );
    }
}
