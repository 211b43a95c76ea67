-- The web app: the sites that may frame a shop's embeddable player
-- (Content-Security-Policy frame-ancestors), as a JSON array of origins.
ALTER TABLE shops ADD COLUMN embed_origins TEXT NOT NULL DEFAULT '[]';
