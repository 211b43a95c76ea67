//! `hawker demo`: a demo seller with a shop of eight products (images drawn
//! here, not downloaded), a buyer, a room, and a crowd that buys in the flash
//! sales the seller opens there every few minutes. Running it again adds only
//! what is missing.

use std::collections::BTreeMap;

use anyhow::Context;
use domain::account::{Email, Role};
use domain::catalog::{Description, Handle, OptionValues, ProductStatus, ShopName, Sku, Title};
use domain::ids::{RoomId, UserId};
use domain::money::{Currency, Money};
use domain::room::StreamKey;
use store::{
    Conflict, NewProduct, NewRoom, NewShop, NewVariant, PageRequest, RoomFilter, Store, StoreError,
};

use crate::config::Config;

/// The demo room and the key its looping clip is published with.
pub struct DemoRoom {
    pub id: RoomId,
    pub key: StreamKey,
}

/// A few seconds of test pattern and tone (ffmpeg's testsrc2 and sine, H.264
/// with B-frames and AAC), looped into the demo room over RTMP.
const CLIP: &[u8] = include_bytes!("../../media/fixtures/demo.flv");

/// Publishes the demo clip into the room through the RTMP ingest, in a loop.
/// When a real encoder takes the room over, the clip waits until it is gone.
pub async fn broadcast(
    media: media::Media,
    rtmp: std::net::SocketAddr,
    room: DemoRoom,
    stop: tokio_util::sync::CancellationToken,
) {
    let tags = match media::flv::read_file(&bytes::Bytes::from_static(CLIP)) {
        Ok(tags) => tags,
        Err(e) => {
            tracing::error!(error = %e, "the demo clip does not parse");
            return;
        }
    };
    loop {
        let live = media.stream(&room.id).is_some_and(|s| s.stats().live);
        if !live {
            match media::client::loop_clip(rtmp, room.key.expose(), &tags, stop.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(reason = %e, "the demo clip stopped; it resumes when the room is free")
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}

pub const SELLER_EMAIL: &str = "seller@demo.hawker.localhost";
pub const BUYER_EMAIL: &str = "buyer@demo.hawker.localhost";
pub const PASSWORD: &str = "hawker-demo";

struct DemoProduct {
    title: &'static str,
    description: &'static str,
    /// Option name and values; one variant per value.
    option: (&'static str, &'static [&'static str]),
    price: i64,
    stock: i64,
    /// Base colour of the generated picture.
    rgb: [u8; 3],
}

const PRODUCTS: &[DemoProduct] = &[
    DemoProduct {
        title: "Organic Cotton Tee",
        description: "Heavyweight organic cotton, boxy fit.",
        option: ("size", &["S", "M", "L", "XL"]),
        price: 2499,
        stock: 40,
        rgb: [226, 92, 72],
    },
    DemoProduct {
        title: "Merino Beanie",
        description: "Soft merino rib knit.",
        option: ("colour", &["Charcoal", "Mustard"]),
        price: 1999,
        stock: 25,
        rgb: [214, 170, 54],
    },
    DemoProduct {
        title: "Ceramic Pour-Over Set",
        description: "Dripper, carafe and two cups.",
        option: ("finish", &["Matte white"]),
        price: 3499,
        stock: 12,
        rgb: [120, 160, 190],
    },
    DemoProduct {
        title: "Bamboo Sunglasses",
        description: "Polarised lenses, bamboo arms.",
        option: ("lens", &["Smoke", "Amber"]),
        price: 4599,
        stock: 18,
        rgb: [96, 140, 80],
    },
    DemoProduct {
        title: "Canvas Tote Bag",
        description: "Waxed canvas, leather handles.",
        option: ("colour", &["Olive", "Sand", "Navy"]),
        price: 1599,
        stock: 60,
        rgb: [160, 150, 110],
    },
    DemoProduct {
        title: "Wireless Earbuds",
        description: "Eight hours of play, USB-C case.",
        option: ("colour", &["Black", "White"]),
        price: 7999,
        stock: 30,
        rgb: [60, 64, 80],
    },
    DemoProduct {
        title: "Scented Soy Candle",
        description: "Forty hours of burn time.",
        option: ("scent", &["Cedar", "Fig", "Sea salt"]),
        price: 1899,
        stock: 45,
        rgb: [200, 130, 160],
    },
    DemoProduct {
        title: "Leather Card Wallet",
        description: "Vegetable-tanned, hand-stitched.",
        option: ("colour", &["Tan", "Black"]),
        price: 2999,
        stock: 22,
        rgb: [150, 95, 55],
    },
];

/// Buyers of the simulated crowd that buys in the demo's flash sales.
const CROWD: usize = 12;

fn crowd_email(i: usize) -> String {
    format!("crowd-{i}@demo.hawker.localhost")
}

/// The demo's crowd: a flash sale in the demo room every three minutes (the
/// first a few seconds after start), with the crowd buying.
/// The demo server's own address, as its crowd reaches it.
fn base(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

fn crowd_account(email: String) -> loadgen::crowd::Account {
    loadgen::crowd::Account {
        email,
        password: PASSWORD.to_owned(),
    }
}

/// Half the crowd sits in the demo room and chats, each about every 20 s.
pub fn chatter(addr: std::net::SocketAddr) -> loadgen::crowd::Chatter {
    loadgen::crowd::Chatter {
        base: base(addr),
        shop: "demo".to_owned(),
        viewers: (0..CROWD / 2).map(crowd_email).map(crowd_account).collect(),
        every: std::time::Duration::from_secs(20),
    }
}

pub fn crowd(addr: std::net::SocketAddr) -> loadgen::crowd::FlashSales {
    let account = crowd_account;
    loadgen::crowd::FlashSales {
        base: base(addr),
        shop: "demo".to_owned(),
        seller: account(SELLER_EMAIL.to_owned()),
        buyers: (0..CROWD).map(crowd_email).map(account).collect(),
        first_after: std::time::Duration::from_secs(3),
        every: std::time::Duration::from_secs(180),
        quantity: 8,
        duration: std::time::Duration::from_secs(90),
    }
}

async fn ensure_user(store: &Store, email: &str, name: &str) -> anyhow::Result<UserId> {
    if let Some((user, _)) = store.user_by_email(&Email::parse(email)?).await? {
        return Ok(user.id);
    }
    let user = api::create_account(store, email, name, PASSWORD, Role::Buyer)
        .await
        .map_err(|e| anyhow::anyhow!("creating {email}: {}", e.message))?;
    Ok(user.id)
}

pub async fn seed(store: &Store, config: &Config) -> anyhow::Result<DemoRoom> {
    let seller = ensure_user(store, SELLER_EMAIL, "Demo Seller").await?;
    ensure_user(store, BUYER_EMAIL, "Demo Buyer").await?;
    for i in 0..CROWD {
        ensure_user(store, &crowd_email(i), &format!("Shopper {}", i + 1)).await?;
    }
    let shop = match store.shop("demo").await? {
        Some(shop) => shop,
        None => {
            store
                .create_shop(NewShop {
                    owner: seller.clone(),
                    handle: Handle::parse("demo")?,
                    name: ShopName::parse("Hawker Demo Shop")?,
                    currency: Currency::parse("EUR")?,
                    description: Description::parse(
                        "Everything here is made up, including the prices.",
                    )?,
                })
                .await?
        }
    };
    let objects = objects::Objects::open(
        config.api.object_store_url.as_deref(),
        config.api.object_store_endpoint.as_deref(),
        &config.data_dir,
    )?;
    for (index, p) in PRODUCTS.iter().enumerate() {
        let picture = draw_product(index, p.rgb)?;
        let image = api::save_image(store, &objects, &shop.id, picture.into())
            .await
            .map_err(|e| anyhow::anyhow!("saving a demo image: {}", e.message))?;
        let variants = p
            .option
            .1
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let mut options = BTreeMap::new();
                options.insert(p.option.0.to_owned(), (*value).to_owned());
                Ok(NewVariant {
                    sku: Sku::parse(&format!("DEMO-{}-{}", index + 1, i + 1))?,
                    options: OptionValues::parse(&options)?,
                    price: Money::parse(p.price, "EUR")?,
                    stock: p.stock,
                })
            })
            .collect::<Result<Vec<_>, domain::ValidationError>>()?;
        let new = NewProduct {
            shop: shop.id.clone(),
            title: Title::parse(p.title)?,
            description: Description::parse(p.description)?,
            status: ProductStatus::Active,
            images: vec![image.id],
            variants,
        };
        match store.create_product(new, &seller).await {
            // Its SKUs exist: seeded by an earlier run.
            Ok(_) | Err(StoreError::Conflict(Conflict::Sku)) => {}
            Err(e) => return Err(e).context("creating a demo product"),
        }
    }
    let filter = RoomFilter {
        shop: Some(shop.id.clone()),
        status: None,
    };
    let rooms = store
        .rooms(
            &filter,
            &PageRequest {
                after: None,
                limit: 1,
            },
        )
        .await?;
    // A fresh key each start: the demo's own encoder publishes with it, and
    // only its hash is kept.
    let mut random = [0u8; 24];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = StreamKey::from_random(random);
    let room = if let Some(room) = rooms.items.into_iter().next() {
        store
            .set_stream_key_hash(&room.id, &api::hash_secret(key.expose()))
            .await?;
        room
    } else {
        store
            .create_room(NewRoom {
                shop: shop.id.clone(),
                title: Title::parse("Friday drop: new arrivals live")?,
                description: Description::parse("Tees, candles and a flash sale or two.")?,
                cover_image: None,
                scheduled_start: None,
                stream_key_hash: api::hash_secret(key.expose()),
            })
            .await?
    };
    println!(
        "\nHawker demo: http://{addr}/  (shop: http://{addr}/api/v1/shops/demo/products)\n  \
         seller: {SELLER_EMAIL} / {PASSWORD}\n  buyer:  {BUYER_EMAIL} / {PASSWORD}\n  \
         live:   http://{addr}{hls} (LL-HLS), http://{addr}{flv}\n",
        addr = config.http_addr,
        hls = media::hls_path(&room.id),
        flv = media::flv_path(&room.id),
    );
    Ok(DemoRoom { id: room.id, key })
}

/// A 320x320 PNG: a diagonal gradient of `rgb` with a lighter disc whose place
/// depends on `index`, so each product looks different.
fn draw_product(index: usize, rgb: [u8; 3]) -> anyhow::Result<Vec<u8>> {
    const SIZE: u32 = 320;
    let (cx, cy) = (
        100.0 + 30.0 * (index % 4) as f32,
        120.0 + 25.0 * (index % 3) as f32,
    );
    let mut pixels = Vec::with_capacity((SIZE * SIZE * 3) as usize);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let shade = 0.65 + 0.35 * (x + y) as f32 / (2 * SIZE) as f32;
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let disc = if dx * dx + dy * dy < 70.0 * 70.0 {
                1.35
            } else {
                1.0
            };
            for c in rgb {
                pixels.push((f32::from(c) * shade * disc).min(255.0) as u8);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, SIZE, SIZE);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(out)
}
