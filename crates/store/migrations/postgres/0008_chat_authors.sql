-- Whether a chat message's author was the shop's owner or a moderator when they
-- said it, so that a room opened again shows its recent chat as it was shown.
-- The author's name comes from users when read.
ALTER TABLE chat_messages ADD COLUMN moderator BIGINT NOT NULL DEFAULT 0 CHECK (moderator IN (0, 1));
