//! Shops, products, variants, images and the stock ledger.

use std::collections::BTreeMap;

use domain::Timestamp;
use domain::catalog::{
    Description, EmbedOrigins, Handle, OptionValues, Product, ProductStatus, Shop, ShopName, Sku,
    Title, Variant,
};
use domain::ids::{AdjustmentId, ProductId, ShopId, UserId, VariantId};
use domain::money::{Currency, Money};
use domain::stock::{AdjustmentReason, MAX_STOCK, StockAdjustment, StockDelta};

use crate::db::{Execute, execute, fetch_all, fetch_one, fetch_optional};
use crate::error::{Conflict, Result, StoreError};
use crate::row::{Get, corrupt};
use crate::{Page, PageRequest, Store};

pub struct NewShop {
    pub owner: UserId,
    pub handle: Handle,
    pub name: ShopName,
    pub currency: Currency,
    pub description: Description,
}

#[derive(Default)]
pub struct ShopPatch {
    pub handle: Option<Handle>,
    pub name: Option<ShopName>,
    pub description: Option<Description>,
    pub embed_origins: Option<EmbedOrigins>,
}

pub struct NewVariant {
    pub sku: Sku,
    pub options: OptionValues,
    pub price: Money,
    pub stock: i64,
}

pub struct NewProduct {
    pub shop: ShopId,
    pub title: Title,
    pub description: Description,
    pub status: ProductStatus,
    pub images: Vec<String>,
    pub variants: Vec<NewVariant>,
}

#[derive(Default)]
pub struct ProductPatch {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub status: Option<ProductStatus>,
    pub images: Option<Vec<String>>,
}

#[derive(Default)]
pub struct VariantPatch {
    pub sku: Option<Sku>,
    pub options: Option<OptionValues>,
    pub price: Option<Money>,
}

const SHOP_COLUMNS: &str =
    "id, owner_id, handle, name, currency, description, embed_origins, created_at, updated_at";
const PRODUCT_COLUMNS: &str =
    "id, shop_id, title, description, status, images, created_at, updated_at";
/// Product columns under `p_` names, so they can share a row with a variant's.
const PRODUCT_SELECT: &str = "p.id AS p_id, p.shop_id AS p_shop_id, p.title AS p_title, \
     p.description AS p_description, p.status AS p_status, p.images AS p_images, \
     p.created_at AS p_created_at, p.updated_at AS p_updated_at";
const VARIANT_COLUMNS: &str = "id, product_id, sku, options, price_amount, currency, \
     stock_on_hand, created_at, updated_at";
const VARIANT_SELECT: &str = "v.id, v.product_id, v.sku, v.options, v.price_amount, \
     v.currency, v.stock_on_hand, v.created_at, v.updated_at";
const ADJUSTMENT_COLUMNS: &str =
    "id, variant_id, delta, reason, note, actor_id, on_hand_after, created_at";

fn shop<R: Get>(r: &R) -> Result<Shop> {
    Ok(Shop {
        id: ShopId::from_string(r.text("id")?),
        owner_id: UserId::from_string(r.text("owner_id")?),
        handle: Handle::parse(&r.text("handle")?).map_err(|e| corrupt("handle", e))?,
        name: ShopName::parse(&r.text("name")?).map_err(|e| corrupt("shop name", e))?,
        currency: Currency::parse(&r.text("currency")?).map_err(|e| corrupt("currency", e))?,
        description: Description::parse(&r.text("description")?)
            .map_err(|e| corrupt("description", e))?,
        embed_origins: EmbedOrigins::parse(
            &serde_json::from_str::<Vec<String>>(&r.text("embed_origins")?)
                .map_err(|e| corrupt("embed origins", e))?,
        )
        .map_err(|e| corrupt("embed origins", e))?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

/// A product's own columns (selected as [`PRODUCT_SELECT`]), without its variants.
fn product_row<R: Get>(r: &R) -> Result<Product> {
    let status = r.text("p_status")?;
    let images: Vec<String> =
        serde_json::from_str(&r.text("p_images")?).map_err(|e| corrupt("product images", e))?;
    Ok(Product {
        id: ProductId::from_string(r.text("p_id")?),
        shop_id: ShopId::from_string(r.text("p_shop_id")?),
        title: Title::parse(&r.text("p_title")?).map_err(|e| corrupt("title", e))?,
        description: Description::parse(&r.text("p_description")?)
            .map_err(|e| corrupt("description", e))?,
        status: ProductStatus::parse(&status).ok_or_else(|| corrupt("status", status))?,
        images,
        variants: Vec::new(),
        created_at: Timestamp::from_millis(r.int("p_created_at")?),
        updated_at: Timestamp::from_millis(r.int("p_updated_at")?),
    })
}

/// A row of a product joined with one of its variants (none for a product
/// without variants, where the LEFT JOIN leaves the variant columns NULL).
fn product_and_variant<R: Get>(r: &R) -> Result<(Product, Option<Variant>)> {
    let variant = match r.opt_text("id")? {
        Some(_) => Some(variant(r)?),
        None => None,
    };
    Ok((product_row(r)?, variant))
}

fn variant<R: Get>(r: &R) -> Result<Variant> {
    let options: BTreeMap<String, String> =
        serde_json::from_str(&r.text("options")?).map_err(|e| corrupt("variant options", e))?;
    let price = Money::parse(r.int("price_amount")?, &r.text("currency")?)
        .map_err(|e| corrupt("price", e))?;
    Ok(Variant {
        id: VariantId::from_string(r.text("id")?),
        product_id: ProductId::from_string(r.text("product_id")?),
        sku: Sku::parse(&r.text("sku")?).map_err(|e| corrupt("sku", e))?,
        options: OptionValues::parse(&options).map_err(|e| corrupt("options", e))?,
        price,
        stock_on_hand: r.int("stock_on_hand")?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
        updated_at: Timestamp::from_millis(r.int("updated_at")?),
    })
}

fn adjustment<R: Get>(r: &R) -> Result<StockAdjustment> {
    let reason = r.text("reason")?;
    Ok(StockAdjustment {
        id: AdjustmentId::from_string(r.text("id")?),
        variant_id: VariantId::from_string(r.text("variant_id")?),
        delta: r.int("delta")?,
        reason: AdjustmentReason::parse(&reason).ok_or_else(|| corrupt("reason", reason))?,
        note: r.text("note")?,
        actor_id: UserId::from_string(r.text("actor_id")?),
        on_hand_after: r.int("on_hand_after")?,
        created_at: Timestamp::from_millis(r.int("created_at")?),
    })
}

fn on_hand<R: Get>(r: &R) -> Result<i64> {
    r.int("stock_on_hand")
}

fn variant_owner<R: Get>(r: &R) -> Result<(Variant, ShopId)> {
    Ok((variant(r)?, ShopId::from_string(r.text("shop_id")?)))
}

fn content_type<R: Get>(r: &R) -> Result<String> {
    r.text("content_type")
}

/// Fills in the variants of `products` (all of one shop) with one query for the
/// whole page, instead of one per product.
async fn with_variants(
    e: &mut impl Execute,
    shop: &ShopId,
    mut products: Vec<Product>,
) -> Result<Vec<Product>> {
    let (Some(low), Some(high)) = (
        products.iter().map(|p| p.id.as_str().to_owned()).min(),
        products.iter().map(|p| p.id.as_str().to_owned()).max(),
    ) else {
        return Ok(products);
    };
    let variants = fetch_all!(
        e,
        sqlx::query(&format!(
            "SELECT {VARIANT_SELECT} FROM variants v
             WHERE v.shop_id = $1 AND v.product_id >= $2 AND v.product_id <= $3
             ORDER BY v.product_id, v.position"
        ))
        .bind(shop.as_str())
        .bind(&low)
        .bind(&high),
        variant
    )?;
    let mut by_id: BTreeMap<String, &mut Product> = products
        .iter_mut()
        .map(|p| (p.id.as_str().to_owned(), p))
        .collect();
    for v in variants {
        if let Some(p) = by_id.get_mut(v.product_id.as_str()) {
            p.variants.push(v);
        }
    }
    Ok(products)
}

/// A product with its variants, in one query.
async fn load_product(e: &mut impl Execute, id: &ProductId) -> Result<Option<Product>> {
    let rows = fetch_all!(
        e,
        sqlx::query(&format!(
            "SELECT {PRODUCT_SELECT}, {VARIANT_SELECT}
             FROM products p LEFT JOIN variants v ON v.product_id = p.id
             WHERE p.id = $1 ORDER BY v.position"
        ))
        .bind(id.as_str()),
        product_and_variant
    )?;
    let mut rows = rows.into_iter();
    let Some((mut product, first)) = rows.next() else {
        return Ok(None);
    };
    product.variants = first
        .into_iter()
        .chain(rows.filter_map(|(_, v)| v))
        .collect();
    Ok(Some(product))
}

/// Checks that every image was uploaded to `shop` and returns the list as the
/// JSON the product row keeps.
async fn checked_images(e: &mut impl Execute, shop: &ShopId, images: &[String]) -> Result<String> {
    for image in images {
        if !image_in_shop(e, shop, image).await? {
            return Err(StoreError::UnknownImage(image.clone()));
        }
    }
    serde_json::to_string(images).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn image_in_shop(e: &mut impl Execute, shop: &ShopId, image: &str) -> Result<bool> {
    let found = fetch_optional!(
        e,
        sqlx::query("SELECT content_type FROM images WHERE shop_id = $1 AND id = $2")
            .bind(shop.as_str())
            .bind(image),
        content_type
    )?;
    Ok(found.is_some())
}

async fn insert_variant(
    e: &mut impl Execute,
    shop: &ShopId,
    product: &ProductId,
    position: i64,
    new: &NewVariant,
    actor: &UserId,
) -> Result<VariantId> {
    let id = VariantId::generate();
    let now = Timestamp::now().as_millis();
    let options = serde_json::to_string(new.options.as_map())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    execute!(
        e,
        sqlx::query(&format!(
            "INSERT INTO variants (position, shop_id, {VARIANT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)"
        ))
        .bind(position)
        .bind(shop.as_str())
        .bind(id.as_str())
        .bind(product.as_str())
        .bind(new.sku.as_str())
        .bind(&options)
        .bind(new.price.amount)
        .bind(new.price.currency.code())
        .bind(now)
    )
    .map_err(StoreError::unique(Conflict::Sku))?;
    if new.stock > 0 {
        let delta = StockDelta::parse(new.stock).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        adjust(e, &id, delta, AdjustmentReason::Initial, "", actor).await?;
    }
    Ok(id)
}

/// The one path by which stock on hand changes: a conditional update that cannot
/// take stock below zero, and its ledger line, in the caller's transaction.
pub(crate) async fn adjust(
    e: &mut impl Execute,
    variant: &VariantId,
    delta: StockDelta,
    reason: AdjustmentReason,
    note: &str,
    actor: &UserId,
) -> Result<StockAdjustment> {
    let now = Timestamp::now().as_millis();
    let after = fetch_optional!(
        e,
        sqlx::query(
            "UPDATE variants SET stock_on_hand = stock_on_hand + $2, updated_at = $3
             WHERE id = $1 AND stock_on_hand + $2 >= 0 AND stock_on_hand + $2 <= $4
             RETURNING stock_on_hand"
        )
        .bind(variant.as_str())
        .bind(delta.get())
        .bind(now)
        .bind(MAX_STOCK),
        on_hand
    )?;
    let Some(after) = after else {
        let current = fetch_optional!(
            e,
            sqlx::query("SELECT stock_on_hand FROM variants WHERE id = $1").bind(variant.as_str()),
            on_hand
        )?;
        return Err(match current {
            Some(on_hand) => StoreError::InsufficientStock { on_hand },
            None => StoreError::NotFound,
        });
    };
    fetch_one!(
        e,
        sqlx::query(&format!(
            "INSERT INTO stock_adjustments ({ADJUSTMENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING {ADJUSTMENT_COLUMNS}"
        ))
        .bind(AdjustmentId::generate().as_str())
        .bind(variant.as_str())
        .bind(delta.get())
        .bind(reason.as_str())
        .bind(note)
        .bind(actor.as_str())
        .bind(after)
        .bind(now),
        adjustment
    )
}

impl Store {
    /// Opens a shop and makes its owner a seller, in one transaction.
    pub async fn create_shop(&self, new: NewShop) -> Result<Shop> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let created = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO shops ({SHOP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, '[]', $7, $7)
                 RETURNING {SHOP_COLUMNS}"
            ))
            .bind(ShopId::generate().as_str())
            .bind(new.owner.as_str())
            .bind(new.handle.as_str())
            .bind(new.name.as_str())
            .bind(new.currency.code())
            .bind(new.description.as_str())
            .bind(now),
            shop
        )
        .map_err(StoreError::unique(Conflict::Handle))?;
        execute!(
            &mut tx,
            sqlx::query("UPDATE users SET role = 'seller' WHERE id = $1 AND role = 'buyer'")
                .bind(new.owner.as_str())
        )?;
        tx.commit().await?;
        Ok(created)
    }

    /// A shop by its id or its handle.
    pub async fn shop(&self, id_or_handle: &str) -> Result<Option<Shop>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {SHOP_COLUMNS} FROM shops WHERE id = $1 OR handle = $1"
            ))
            .bind(id_or_handle),
            shop
        )
    }

    /// Every shop, newest first.
    pub async fn shops(&self, page: &PageRequest) -> Result<Page<Shop>> {
        let mut c = self.read().await?;
        let rows = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {SHOP_COLUMNS} FROM shops WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            shop
        )?;
        Ok(page.page(rows, |s| s.id.as_str().to_owned()))
    }

    pub async fn shops_owned_by(&self, owner: &UserId) -> Result<Vec<Shop>> {
        let mut c = self.read().await?;
        fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {SHOP_COLUMNS} FROM shops WHERE owner_id = $1 ORDER BY id"
            ))
            .bind(owner.as_str()),
            shop
        )
    }

    pub async fn update_shop(&self, id: &ShopId, patch: ShopPatch) -> Result<Shop> {
        let embed_origins = patch
            .embed_origins
            .as_ref()
            .map(|o| serde_json::to_string(o.as_slice()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write().await?;
        let updated = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE shops SET handle = COALESCE($2, handle), name = COALESCE($3, name),
                     description = COALESCE($4, description),
                     embed_origins = COALESCE($6, embed_origins), updated_at = $5
                 WHERE id = $1 RETURNING {SHOP_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(patch.handle.as_ref().map(Handle::as_str))
            .bind(patch.name.as_ref().map(ShopName::as_str))
            .bind(patch.description.as_ref().map(Description::as_str))
            .bind(Timestamp::now().as_millis())
            .bind(embed_origins),
            shop
        )
        .map_err(StoreError::unique(Conflict::Handle))?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Records an uploaded image for a shop; uploading the same bytes twice is a no-op.
    pub async fn add_image(
        &self,
        shop: &ShopId,
        id: &str,
        content_type: &str,
        byte_size: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        execute!(
            &mut tx,
            sqlx::query(
                "INSERT INTO images (shop_id, id, content_type, byte_size, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shop_id, id) DO NOTHING"
            )
            .bind(shop.as_str())
            .bind(id)
            .bind(content_type)
            .bind(byte_size)
            .bind(Timestamp::now().as_millis())
        )?;
        tx.commit().await
    }

    /// Whether `image` was uploaded to `shop` (images are usable only in their shop).
    pub async fn shop_has_image(&self, shop: &ShopId, image: &str) -> Result<bool> {
        let mut c = self.read().await?;
        image_in_shop(&mut c, shop, image).await
    }

    /// The content type of an uploaded image, by its content hash.
    pub async fn image_content_type(&self, id: &str) -> Result<Option<String>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query("SELECT content_type FROM images WHERE id = $1 LIMIT 1").bind(id),
            content_type
        )
    }

    /// Creates a product with its images and variants; each variant's starting
    /// stock is the first line of its ledger.
    pub async fn create_product(&self, new: NewProduct, actor: &UserId) -> Result<Product> {
        let id = ProductId::generate();
        let now = Timestamp::now().as_millis();
        let mut tx = self.write().await?;
        let images = checked_images(&mut tx, &new.shop, &new.images).await?;
        execute!(
            &mut tx,
            sqlx::query(&format!(
                "INSERT INTO products ({PRODUCT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
            ))
            .bind(id.as_str())
            .bind(new.shop.as_str())
            .bind(new.title.as_str())
            .bind(new.description.as_str())
            .bind(new.status.as_str())
            .bind(&images)
            .bind(now)
        )?;
        for (position, v) in new.variants.iter().enumerate() {
            insert_variant(&mut tx, &new.shop, &id, position as i64, v, actor).await?;
        }
        let product = load_product(&mut tx, &id)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(product)
    }

    /// A product with its variants, in one query.
    pub async fn product(&self, id: &ProductId) -> Result<Option<Product>> {
        let mut c = self.read().await?;
        load_product(&mut c, id).await
    }

    /// A shop's products, newest first; `statuses` filters (buyers see only active ones).
    pub async fn products(
        &self,
        shop: &ShopId,
        statuses: &[ProductStatus],
        page: &PageRequest,
    ) -> Result<Page<Product>> {
        let mut c = self.read().await?;
        // A status not asked for is bound as '' so the list of placeholders stays fixed.
        let status = |i: usize| statuses.get(i).map_or("", |s| s.as_str());
        let rows = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {PRODUCT_SELECT} FROM products p
                 WHERE p.shop_id = $1 AND p.status IN ($2, $3, $4) AND p.id < $5
                 ORDER BY p.id DESC LIMIT $6"
            ))
            .bind(shop.as_str())
            .bind(status(0))
            .bind(status(1))
            .bind(status(2))
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            product_row
        )?;
        let products = with_variants(&mut c, shop, rows).await?;
        Ok(page.page(products, |p| p.id.as_str().to_owned()))
    }

    pub async fn update_product(&self, id: &ProductId, patch: ProductPatch) -> Result<Product> {
        let mut tx = self.write().await?;
        let images = match &patch.images {
            Some(images) => {
                let product = load_product(&mut tx, id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                Some(checked_images(&mut tx, &product.shop_id, images).await?)
            }
            None => None,
        };
        let changed = execute!(
            &mut tx,
            sqlx::query(
                "UPDATE products SET title = COALESCE($2, title),
                     description = COALESCE($3, description), status = COALESCE($4, status),
                     images = COALESCE($5, images), updated_at = $6
                 WHERE id = $1"
            )
            .bind(id.as_str())
            .bind(patch.title.as_ref().map(Title::as_str))
            .bind(patch.description.as_ref().map(Description::as_str))
            .bind(patch.status.map(ProductStatus::as_str))
            .bind(images.as_deref())
            .bind(Timestamp::now().as_millis())
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        let product = load_product(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(product)
    }

    /// Adds a variant at the end of a product's list.
    pub async fn add_variant(
        &self,
        product: &ProductId,
        new: NewVariant,
        actor: &UserId,
    ) -> Result<Variant> {
        let mut tx = self.write().await?;
        let p = load_product(&mut tx, product)
            .await?
            .ok_or(StoreError::NotFound)?;
        let position = p.variants.len() as i64;
        let id = insert_variant(&mut tx, &p.shop_id, product, position, &new, actor).await?;
        let created = fetch_one!(
            &mut tx,
            sqlx::query(&format!(
                "SELECT {VARIANT_COLUMNS} FROM variants WHERE id = $1"
            ))
            .bind(id.as_str()),
            variant
        )?;
        tx.commit().await?;
        Ok(created)
    }

    /// A variant and the shop it belongs to.
    pub async fn variant(&self, id: &VariantId) -> Result<Option<(Variant, ShopId)>> {
        let mut c = self.read().await?;
        fetch_optional!(
            &mut c,
            sqlx::query(&format!(
                "SELECT v.shop_id, {VARIANT_SELECT} FROM variants v WHERE v.id = $1"
            ))
            .bind(id.as_str()),
            variant_owner
        )
    }

    /// Changes a variant's SKU, options or price. Stock changes go through
    /// [`Store::adjust_stock`] only.
    pub async fn update_variant(&self, id: &VariantId, patch: VariantPatch) -> Result<Variant> {
        let options = patch
            .options
            .as_ref()
            .map(|o| serde_json::to_string(o.as_map()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write().await?;
        let updated = fetch_optional!(
            &mut tx,
            sqlx::query(&format!(
                "UPDATE variants SET sku = COALESCE($2, sku), options = COALESCE($3, options),
                     price_amount = COALESCE($4, price_amount), updated_at = $5
                 WHERE id = $1 RETURNING {VARIANT_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(patch.sku.as_ref().map(Sku::as_str))
            .bind(options.as_deref())
            .bind(patch.price.map(|p| p.amount))
            .bind(Timestamp::now().as_millis()),
            variant
        )
        .map_err(StoreError::unique(Conflict::Sku))?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Changes a variant's stock on hand and records why, atomically. Fails with
    /// `InsufficientStock` rather than let stock go below zero.
    pub async fn adjust_stock(
        &self,
        variant: &VariantId,
        delta: StockDelta,
        reason: AdjustmentReason,
        note: &str,
        actor: &UserId,
    ) -> Result<StockAdjustment> {
        let mut tx = self.write().await?;
        let line = adjust(&mut tx, variant, delta, reason, note, actor).await?;
        tx.commit().await?;
        Ok(line)
    }

    /// A variant's stock ledger, newest first.
    pub async fn stock_ledger(
        &self,
        variant: &VariantId,
        page: &PageRequest,
    ) -> Result<Page<StockAdjustment>> {
        let mut c = self.read().await?;
        let rows = fetch_all!(
            &mut c,
            sqlx::query(&format!(
                "SELECT {ADJUSTMENT_COLUMNS} FROM stock_adjustments
                 WHERE variant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            ))
            .bind(variant.as_str())
            .bind(page.before_id())
            .bind(page.fetch_limit()),
            adjustment
        )?;
        Ok(page.page(rows, |a| a.id.as_str().to_owned()))
    }
}
