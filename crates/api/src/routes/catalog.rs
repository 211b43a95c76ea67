//! Shops, products, variants and stock.
//!
//! Reads of a shop and of its active products are public. Everything else needs
//! the shop's owner: another seller gets `forbidden` for what is public anyway and
//! `not_found` for what they cannot see (drafts, archived products).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use domain::catalog::{
    Description, EmbedOrigins, Handle, OptionValues, Product, ProductStatus, Shop, ShopName, Sku,
    Title, Variant,
};
use domain::ids::{ProductId, VariantId};
use domain::money::{Currency, Money};
use domain::stock::{AdjustmentReason, StockAdjustment, StockDelta, parse_stock_level};
use serde::Deserialize;
use store::{NewProduct, NewShop, NewVariant, ProductPatch, ShopPatch, VariantPatch};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Page, PageQuery};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{CurrentUser, JsonBody, MaybeUser, QueryParams};
use crate::{ApiConfig, AppState};

const MAX_VARIANTS: usize = 100;
const MAX_IMAGES: usize = 10;

pub(crate) fn router(config: &ApiConfig) -> OpenApiRouter<AppState> {
    // Uploads may be larger than the JSON limit the rest of the API keeps.
    let uploads = OpenApiRouter::new()
        .routes(routes!(super::images::upload_image))
        .layer(DefaultBodyLimit::max(config.max_image_bytes));
    OpenApiRouter::new()
        .routes(routes!(create_shop))
        .routes(routes!(get_shop, update_shop))
        .merge(uploads)
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, update_product))
        .routes(routes!(add_variant))
        .routes(routes!(update_variant))
        .routes(routes!(adjust_stock, stock_ledger))
}

/// `{"amount": 1999, "currency": "EUR"}`: amount in integer minor units.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoneyInput {
    amount: i64,
    currency: String,
}

impl MoneyInput {
    /// The price, which must be in the shop's currency.
    pub(crate) fn parse_for(&self, shop: &Shop) -> ApiResult<Money> {
        let money = Money::parse(self.amount, &self.currency)?;
        if money.currency != shop.currency {
            return Err(ApiError::new(
                Code::CurrencyMismatch,
                format!("Prices in this shop are in {}.", shop.currency),
            ));
        }
        Ok(money)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateShop {
    /// URL handle: 3 to 32 lower-case letters, digits and hyphens.
    handle: String,
    name: String,
    /// ISO-4217 code; every price in the shop is in it. Cannot change later.
    currency: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateShop {
    handle: Option<String>,
    name: Option<String>,
    description: Option<String>,
    /// The sites whose pages may frame the shop's embeddable player
    /// (`/embed/{room}`), such as `["https://shop.example"]`; replaces the list.
    embed_origins: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VariantInput {
    /// Unique within the shop.
    sku: String,
    /// Option values such as `{"size": "M", "colour": "red"}`.
    #[serde(default)]
    options: BTreeMap<String, String>,
    price: MoneyInput,
    /// Starting stock on hand (default 0); recorded as the ledger's first line.
    #[serde(default)]
    stock: i64,
}

impl VariantInput {
    fn parse_for(&self, shop: &Shop) -> ApiResult<NewVariant> {
        Ok(NewVariant {
            sku: Sku::parse(&self.sku)?,
            options: OptionValues::parse(&self.options)?,
            price: self.price.parse_for(shop)?,
            stock: parse_stock_level("stock", self.stock)?,
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProduct {
    title: String,
    #[serde(default)]
    description: String,
    /// Default `draft`: only the seller sees it until it is `active`.
    status: Option<ProductStatus>,
    /// Image ids from `POST /api/v1/shops/{shop}/images`, in display order.
    #[serde(default)]
    images: Vec<String>,
    /// At least one.
    variants: Vec<VariantInput>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateProduct {
    title: Option<String>,
    description: Option<String>,
    status: Option<ProductStatus>,
    /// Replaces the image list.
    images: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateVariant {
    sku: Option<String>,
    options: Option<BTreeMap<String, String>>,
    price: Option<MoneyInput>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAdjustment {
    /// Units added (positive) or removed (negative); never zero.
    delta: i64,
    reason: AdjustmentReason,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProductQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    /// The owner may list drafts or archived products; others see active ones only.
    status: Option<ProductStatus>,
}

/// The shop if `current` owns it: `not_found` when it does not exist,
/// `forbidden` when it is someone else's.
pub(crate) async fn owned_shop(
    state: &AppState,
    current: &CurrentUser,
    shop: &str,
) -> ApiResult<Shop> {
    let shop = state.store().shop(shop).await?.ok_or(Code::NotFound)?;
    if shop.owner_id != current.user.id {
        return Err(Code::Forbidden.into());
    }
    Ok(shop)
}

/// A product and its shop, checked for a write by `current`.
async fn owned_product(
    state: &AppState,
    current: &CurrentUser,
    id: &ProductId,
) -> ApiResult<(Product, Shop)> {
    let product = state.store().product(id).await?.ok_or(Code::NotFound)?;
    let shop = state
        .store()
        .shop(product.shop_id.as_str())
        .await?
        .ok_or(Code::NotFound)?;
    if shop.owner_id != current.user.id {
        // Someone else's draft does not exist as far as they can tell.
        return Err(match product.status {
            ProductStatus::Active => Code::Forbidden.into(),
            _ => Code::NotFound.into(),
        });
    }
    Ok((product, shop))
}

async fn owned_variant(
    state: &AppState,
    current: &CurrentUser,
    id: &VariantId,
) -> ApiResult<(Variant, Shop)> {
    let (variant, _) = state.store().variant(id).await?.ok_or(Code::NotFound)?;
    let (_, shop) = owned_product(state, current, &variant.product_id).await?;
    Ok((variant, shop))
}

fn check_images(images: &[String]) -> ApiResult<()> {
    if images.len() > MAX_IMAGES {
        return Err(
            domain::ValidationError::new("images", format!("at most {MAX_IMAGES} images")).into(),
        );
    }
    Ok(())
}

/// Opens a shop; its owner becomes a seller.
#[utoipa::path(post, path = "/api/v1/shops", tag = "catalog", request_body = CreateShop,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Shop),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`handle_taken`", body = ErrorBody),
    ))]
async fn create_shop(
    State(state): State<AppState>,
    current: CurrentUser,
    JsonBody(body): JsonBody<CreateShop>,
) -> ApiResult<(StatusCode, Json<Shop>)> {
    let shop = state
        .store()
        .create_shop(NewShop {
            owner: current.user.id.clone(),
            handle: Handle::parse(&body.handle)?,
            name: ShopName::parse(&body.name)?,
            currency: Currency::parse(&body.currency)?,
            description: Description::parse(&body.description)?,
        })
        .await?;
    // The owner is a seller now: forget the cached buyer.
    state.credentials_changed(&current.user.id).await;
    tracing::info!(shop = %shop.id, owner = %current.user.id, "shop opened");
    Ok((StatusCode::CREATED, Json(shop)))
}

/// A shop, by id or handle (`/api/v1/shops/demo`). Public.
#[utoipa::path(get, path = "/api/v1/shops/{shop}", tag = "catalog",
    params(("shop" = String, Path, description = "Shop id or handle")),
    responses((status = 200, body = Shop), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_shop(
    State(state): State<AppState>,
    Path(shop): Path<String>,
) -> ApiResult<Json<Shop>> {
    Ok(Json(
        state.store().shop(&shop).await?.ok_or(Code::NotFound)?,
    ))
}

/// Changes a shop's handle, name or description. The currency cannot change.
#[utoipa::path(patch, path = "/api/v1/shops/{shop}", tag = "catalog", request_body = UpdateShop,
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Shop),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`handle_taken`", body = ErrorBody),
    ))]
async fn update_shop(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
    JsonBody(body): JsonBody<UpdateShop>,
) -> ApiResult<Json<Shop>> {
    let shop = owned_shop(&state, &current, &shop).await?;
    let patch = ShopPatch {
        handle: body.handle.as_deref().map(Handle::parse).transpose()?,
        name: body.name.as_deref().map(ShopName::parse).transpose()?,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
        embed_origins: body
            .embed_origins
            .as_deref()
            .map(EmbedOrigins::parse)
            .transpose()?,
    };
    Ok(Json(state.store().update_shop(&shop.id, patch).await?))
}

/// Creates a product with its variants.
#[utoipa::path(post, path = "/api/v1/shops/{shop}/products", tag = "catalog", request_body = CreateProduct,
    params(("shop" = String, Path, description = "Shop id or handle")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Product),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`sku_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `currency_mismatch`, `unknown_image`", body = ErrorBody),
    ))]
async fn create_product(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(shop): Path<String>,
    JsonBody(body): JsonBody<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let shop = owned_shop(&state, &current, &shop).await?;
    if body.variants.is_empty() || body.variants.len() > MAX_VARIANTS {
        return Err(domain::ValidationError::new(
            "variants",
            format!("a product has 1 to {MAX_VARIANTS} variants"),
        )
        .into());
    }
    check_images(&body.images)?;
    let variants = body
        .variants
        .iter()
        .map(|v| v.parse_for(&shop))
        .collect::<ApiResult<Vec<_>>>()?;
    let product = state
        .store()
        .create_product(
            NewProduct {
                shop: shop.id.clone(),
                title: Title::parse(&body.title)?,
                description: Description::parse(&body.description)?,
                status: body.status.unwrap_or(ProductStatus::Draft),
                images: body.images,
                variants,
            },
            &current.user.id,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// A shop's products, newest first. Public (active products); the owner may ask
/// for drafts or archived ones with `status`.
#[utoipa::path(get, path = "/api/v1/shops/{shop}/products", tag = "catalog",
    params(("shop" = String, Path, description = "Shop id or handle"), ProductQuery),
    responses((status = 200, body = Page<Product>), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn list_products(
    State(state): State<AppState>,
    MaybeUser(current): MaybeUser,
    Path(shop): Path<String>,
    QueryParams(query): QueryParams<ProductQuery>,
) -> ApiResult<Json<Page<Product>>> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .request()?;
    let shop = state.store().shop(&shop).await?.ok_or(Code::NotFound)?;
    let is_owner = current.is_some_and(|c| c.user.id == shop.owner_id);
    let statuses: &[ProductStatus] = match (is_owner, query.status) {
        (true, Some(s)) => &[s],
        (true, None) => &[
            ProductStatus::Draft,
            ProductStatus::Active,
            ProductStatus::Archived,
        ],
        (false, None | Some(ProductStatus::Active)) => &[ProductStatus::Active],
        (false, Some(_)) => &[],
    };
    if statuses.is_empty() {
        return Ok(Json(Page {
            items: vec![],
            next_cursor: None,
        }));
    }
    Ok(Json(
        state
            .store()
            .products(&shop.id, statuses, &page)
            .await?
            .into(),
    ))
}

/// One product with its variants. Public when active; drafts and archived
/// products only for their owner.
#[utoipa::path(get, path = "/api/v1/products/{product}", tag = "catalog",
    params(("product" = String, Path, description = "Product id")),
    responses((status = 200, body = Product), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_product(
    State(state): State<AppState>,
    MaybeUser(current): MaybeUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Product>> {
    let product = state
        .store()
        .product(&ProductId::from_string(id))
        .await?
        .ok_or(Code::NotFound)?;
    if product.status != ProductStatus::Active {
        let owner = match current {
            Some(c) => state
                .store()
                .shop(product.shop_id.as_str())
                .await?
                .is_some_and(|s| s.owner_id == c.user.id),
            None => false,
        };
        if !owner {
            return Err(Code::NotFound.into());
        }
    }
    Ok(Json(product))
}

/// Changes a product's title, description, status or images.
#[utoipa::path(patch, path = "/api/v1/products/{product}", tag = "catalog", request_body = UpdateProduct,
    params(("product" = String, Path, description = "Product id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Product),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `unknown_image`", body = ErrorBody),
    ))]
async fn update_product(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    let (product, _) = owned_product(&state, &current, &ProductId::from_string(id)).await?;
    if let Some(images) = &body.images {
        check_images(images)?;
    }
    let patch = ProductPatch {
        title: body.title.as_deref().map(Title::parse).transpose()?,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
        status: body.status,
        images: body.images,
    };
    Ok(Json(
        state.store().update_product(&product.id, patch).await?,
    ))
}

/// Adds a variant to a product.
#[utoipa::path(post, path = "/api/v1/products/{product}/variants", tag = "catalog", request_body = VariantInput,
    params(("product" = String, Path, description = "Product id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Variant),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`sku_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `currency_mismatch`", body = ErrorBody),
    ))]
async fn add_variant(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<VariantInput>,
) -> ApiResult<(StatusCode, Json<Variant>)> {
    let (product, shop) = owned_product(&state, &current, &ProductId::from_string(id)).await?;
    if product.variants.len() >= MAX_VARIANTS {
        return Err(domain::ValidationError::new(
            "variants",
            format!("a product has at most {MAX_VARIANTS} variants"),
        )
        .into());
    }
    let new = body.parse_for(&shop)?;
    let variant = state
        .store()
        .add_variant(&product.id, new, &current.user.id)
        .await?;
    Ok((StatusCode::CREATED, Json(variant)))
}

/// Changes a variant's SKU, options or price. Stock changes only through
/// stock adjustments.
#[utoipa::path(patch, path = "/api/v1/variants/{variant}", tag = "catalog", request_body = UpdateVariant,
    params(("variant" = String, Path, description = "Variant id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Variant),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`sku_taken`", body = ErrorBody),
    ))]
async fn update_variant(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateVariant>,
) -> ApiResult<Json<Variant>> {
    let (variant, shop) = owned_variant(&state, &current, &VariantId::from_string(id)).await?;
    let patch = VariantPatch {
        sku: body.sku.as_deref().map(Sku::parse).transpose()?,
        options: body.options.as_ref().map(OptionValues::parse).transpose()?,
        price: body
            .price
            .as_ref()
            .map(|p| p.parse_for(&shop))
            .transpose()?,
    };
    Ok(Json(
        state.store().update_variant(&variant.id, patch).await?,
    ))
}

/// Changes a variant's stock on hand and records why. The answer is the ledger
/// line, with the stock on hand after the change.
#[utoipa::path(post, path = "/api/v1/variants/{variant}/stock-adjustments", tag = "catalog",
    request_body = CreateAdjustment,
    params(("variant" = String, Path, description = "Variant id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = StockAdjustment),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`insufficient_stock`", body = ErrorBody),
    ))]
async fn adjust_stock(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateAdjustment>,
) -> ApiResult<(StatusCode, Json<StockAdjustment>)> {
    let (variant, _) = owned_variant(&state, &current, &VariantId::from_string(id)).await?;
    let delta = StockDelta::parse(body.delta)?;
    if !body.reason.is_manual() {
        return Err(domain::ValidationError::new(
            "reason",
            "use received, correction, damaged or returned; the others are Hawker's own",
        )
        .into());
    }
    let note = body.note.trim();
    if note.chars().count() > 500 {
        return Err(domain::ValidationError::new("note", "must be at most 500 characters").into());
    }
    let line = state
        .store()
        .adjust_stock(&variant.id, delta, body.reason, note, &current.user.id)
        .await?;
    Ok((StatusCode::CREATED, Json(line)))
}

/// A variant's stock ledger, newest first. Owner only.
#[utoipa::path(get, path = "/api/v1/variants/{variant}/stock-adjustments", tag = "catalog",
    params(("variant" = String, Path, description = "Variant id"), PageQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<StockAdjustment>),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn stock_ledger(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<Page<StockAdjustment>>> {
    let page = query.request()?;
    let (variant, _) = owned_variant(&state, &current, &VariantId::from_string(id)).await?;
    Ok(Json(
        state.store().stock_ledger(&variant.id, &page).await?.into(),
    ))
}
