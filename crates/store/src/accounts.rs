//! Users, sessions and personal API tokens. Secrets arrive here already hashed.

use domain::Timestamp;
use domain::account::{ApiToken, DisplayName, Email, Role, TokenName, User};
use domain::ids::{SessionId, TokenId, UserId};

use crate::Store;
use crate::db::{execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Conflict, Result, StoreError};
use crate::row::{Get, corrupt, count};

pub struct NewUser {
    pub email: Email,
    pub display_name: DisplayName,
    /// An Argon2id PHC string; never the password.
    pub password_hash: String,
    pub role: Role,
}

pub(crate) fn user<R: Get>(r: &R) -> Result<User> {
    let role = r.text("role")?;
    Ok(User {
        id: UserId::from_string(r.text("id")?),
        email: Email::parse(&r.text("email")?).map_err(|e| corrupt("email", e))?,
        display_name: DisplayName::parse(&r.text("display_name")?)
            .map_err(|e| corrupt("display_name", e))?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", role))?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
    })
}

fn user_with_hash<R: Get>(r: &R) -> Result<(User, String)> {
    Ok((user(r)?, r.text("password_hash")?))
}

fn session_user<R: Get>(r: &R) -> Result<(SessionId, User)> {
    Ok((SessionId::from_string(r.text("session_id")?), user(r)?))
}

fn token_user<R: Get>(r: &R) -> Result<(TokenId, User)> {
    Ok((TokenId::from_string(r.text("token_id")?), user(r)?))
}

fn api_token<R: Get>(r: &R) -> Result<ApiToken> {
    Ok(ApiToken {
        id: TokenId::from_string(r.text("id")?),
        name: TokenName::parse(&r.text("name")?).map_err(|e| corrupt("token name", e))?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
        revoked_at: r.opt_int("revoked_at")?.map(Timestamp::from_millis),
    })
}

const USER_COLUMNS: &str = "u.id, u.email, u.display_name, u.role, u.created_at";

impl Store {
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let mut tx = self.write().await?;
        let created = fetch_one!(
            &mut tx,
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, display_name, role, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, email, display_name, role, created_at"
            )
            .bind(UserId::generate().as_str())
            .bind(new.email.as_str())
            .bind(new.password_hash.as_str())
            .bind(new.display_name.as_str())
            .bind(new.role.as_str())
            .bind(Timestamp::now().as_millis()),
            user
        )
        .map_err(StoreError::unique(Conflict::Email))?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(
                "SELECT id, email, display_name, role, created_at FROM users WHERE id = $1"
            )
            .bind(id.as_str()),
            user
        )
    }

    /// The hashes of every credential `user` may sign in with now: live
    /// sessions and tokens not revoked.
    pub async fn credential_hashes(&self, user: &UserId) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT token_hash FROM sessions WHERE user_id = $1 AND expires_at > $2
                 UNION ALL
                 SELECT token_hash FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL"
            )
            .bind(user.as_str())
            .bind(Timestamp::now().as_millis()),
            token_hash
        )
    }

    /// The account and its password hash, for signing in.
    pub async fn user_by_email(&self, email: &Email) -> Result<Option<(User, String)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(
                "SELECT id, email, display_name, role, created_at, password_hash
                 FROM users WHERE email = $1"
            )
            .bind(email.as_str()),
            user_with_hash
        )
    }

    pub async fn count_users(&self) -> Result<i64> {
        let mut c = self.read().await?;
        fetch_one!(
            &mut c,
            sqlx::query("SELECT COUNT(*) AS n FROM users"),
            count
        )
    }

    pub async fn set_role(&self, id: &UserId, role: Role) -> Result<()> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(role.as_str())
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    pub async fn create_session(
        &self,
        user: &UserId,
        token_hash: &str,
        expires_at: Timestamp,
    ) -> Result<SessionId> {
        let id = SessionId::generate();
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)"
            )
            .bind(id.as_str())
            .bind(user.as_str())
            .bind(token_hash)
            .bind(Timestamp::now().as_millis())
            .bind(expires_at.as_millis())
        )?;
        tx.commit().await?;
        Ok(id)
    }

    /// The session a token hash names and its user, if the session has not expired.
    pub async fn session_user(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(SessionId, User)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT s.id AS session_id, {USER_COLUMNS}
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.expires_at > $2"
            ))
            .bind(token_hash)
            .bind(now.as_millis()),
            session_user
        )
    }

    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id.as_str())
        )?;
        tx.commit().await
    }

    /// Removes sessions that expired before `now`; returns how many.
    pub async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now.as_millis())
        )?;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn create_api_token(
        &self,
        user: &UserId,
        name: &TokenName,
        token_hash: &str,
    ) -> Result<ApiToken> {
        let mut tx = self.write().await?;
        let token = fetch_one!(
            &mut tx,
            sqlx::query(
                "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING id, name, created_at, revoked_at"
            )
            .bind(TokenId::generate().as_str())
            .bind(user.as_str())
            .bind(name.as_str())
            .bind(token_hash)
            .bind(Timestamp::now().as_millis()),
            api_token
        )?;
        tx.commit().await?;
        Ok(token)
    }

    /// A user's tokens, newest first, revoked ones included.
    pub async fn api_tokens(&self, user: &UserId) -> Result<Vec<ApiToken>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(
                "SELECT id, name, created_at, revoked_at FROM api_tokens
                 WHERE user_id = $1 ORDER BY id DESC"
            )
            .bind(user.as_str()),
            api_token
        )
    }

    /// The user a live (not revoked) token hash belongs to.
    pub async fn token_user(&self, token_hash: &str) -> Result<Option<(TokenId, User)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT t.id AS token_id, {USER_COLUMNS}
                 FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
            ))
            .bind(token_hash),
            token_user
        )
    }

    /// Revokes one of `user`'s tokens. `NotFound` when the token is not theirs or
    /// was already revoked, so nobody learns which ids exist.
    pub async fn revoke_api_token(&self, user: &UserId, token: &TokenId) -> Result<()> {
        let mut tx = self.write().await?;
        let n = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $3
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL"
            )
            .bind(token.as_str())
            .bind(user.as_str())
            .bind(Timestamp::now().as_millis())
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }
}

fn token_hash<R: Get>(r: &R) -> Result<String> {
    r.text("token_hash")
}
