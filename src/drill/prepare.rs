//! Setting up a drill through the public API, before anything is timed: an admin's session,
//! a seller, a category, the products and their stock, and the buyers, each verified (by the
//! admin), with an address and signed in.
//!
//! Sign-ups and logins cost the shop a password hash each, so the members are kept in a
//! file (`buyers.json` in the output directory, mode 0600: it holds refresh tokens) and a
//! later drill against the same shop signs them in again with a refresh, which hashes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::Api;

/// Sign-ups and logins in flight at once (the shop hashes a few at a time anyway).
const SIGN_UPS_IN_FLIGHT: usize = 8;
/// Refreshes and other cheap set-up requests in flight at once.
const CHEAP_IN_FLIGHT: usize = 64;
/// The price of every drill product, in KRW.
pub const PRICE: i64 = 10_000;

/// A signed-in member of the drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub login_id: String,
    pub member_id: String,
    pub address_id: String,
    pub refresh: String,
    #[serde(skip)]
    pub access: String,
    #[serde(skip)]
    pub signed_in: Option<Instant>,
}

/// The members a drill keeps between runs against one shop.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    url: String,
    seller: Option<Member>,
    buyers: Vec<Member>,
}

/// One product of the drill: its only size and the units supplied.
#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub product_id: String,
    pub variant_id: String,
    pub supply: i64,
}

/// Everything set up.
pub struct Shop {
    pub admin: String,
    pub seller: Member,
    pub category: String,
    pub buyers: Vec<Member>,
    /// Members the file held beyond this drill's buyers.
    spare: Vec<Member>,
    /// The run's tag, in every name and key the drill makes.
    pub run: String,
}

/// How a drill's products go on sale.
pub enum Opening {
    /// On sale now.
    Now,
    /// A scheduled drop at this instant (whole seconds, at least 10 s ahead).
    At(DateTime<Utc>),
}

/// Signs the admin in, and makes or signs in the seller and `buyers` buyers.
pub async fn shop(
    api: &Api,
    admin_login: &str,
    admin_password: &str,
    buyers: usize,
    kept_file: &Path,
) -> anyhow::Result<Shop> {
    let run = super::tag();
    let admin = login(api, admin_login, admin_password)
        .await
        .context("signing the admin in (create one with `openrun admin create`)")?;
    let mut kept = read_kept(kept_file, api)?;
    let progress = super::progress(buyers as u64 + 1, "buyers signed in");
    let seller = match kept.seller.take() {
        Some(seller) => refresh(api, seller).await?,
        None => None,
    };
    let seller = match seller {
        Some(seller) => seller,
        None => new_member(api, &admin, &run, usize::MAX, "seller").await?,
    };
    progress.inc(1);
    // Each member once; those beyond `buyers` stay in the file for a larger drill.
    let mut seen = std::collections::HashSet::new();
    kept.buyers.retain(|m| seen.insert(m.member_id.clone()));
    let spare = kept.buyers.split_off(buyers.min(kept.buyers.len()));
    let mut known: Vec<Member> = futures_util::stream::iter(kept.buyers.drain(..))
        .map(|m| refresh(api, m))
        .buffer_unordered(CHEAP_IN_FLIGHT)
        .inspect(|_| progress.inc(1))
        .try_filter_map(|m| async move { Ok(m) })
        .try_collect()
        .await?;
    let keep = |known: &[Member]| {
        let mut buyers = known.to_vec();
        buyers.extend(spare.iter().cloned());
        write_kept(
            kept_file,
            &Kept {
                url: api_url(api),
                seller: Some(seller.clone()),
                buyers,
            },
        )
    };
    // Written before any sign-up (an output directory that cannot be written fails now)
    // and after every few hundred, so that members already made are never lost.
    keep(&known)?;
    let missing = buyers - known.len();
    for start in (0..missing).step_by(256) {
        let made: Vec<Member> = futures_util::stream::iter(start..missing.min(start + 256))
            .map(|i| new_member(api, &admin, &run, i, "basic"))
            .buffer_unordered(SIGN_UPS_IN_FLIGHT)
            .inspect(|_| progress.inc(1))
            .try_collect()
            .await?;
        known.extend(made);
        keep(&known)?;
    }
    progress.finish_and_clear();
    let category = api
        .send(
            Method::POST,
            "/v1/categories",
            Some(&admin),
            Some(&json!({"name": format!("Drill {run}")})),
        )
        .await?
        .expect(StatusCode::CREATED, "creating the drill's category")?;
    let category = category["id"].as_str().context("a category id")?.to_owned();
    Ok(Shop {
        admin,
        seller,
        category,
        buyers: known,
        spare,
        run,
    })
}

impl Shop {
    /// `count` products of one size each, with `supply` units, opening as `opening` says.
    pub async fn products(
        &self,
        api: &Api,
        count: usize,
        supply: i64,
        opening: &Opening,
    ) -> anyhow::Result<Vec<Product>> {
        let seller = self.seller.access.as_str();
        let mut products = Vec::with_capacity(count);
        for n in 0..count {
            let made = api
                .send(
                    Method::POST,
                    "/v1/products",
                    Some(seller),
                    Some(&json!({
                        "category_id": self.category,
                        "name": format!("Drill {} #{}", self.run, n + 1),
                        "description": "A drill product",
                        "price": PRICE,
                        "variants": ["F"],
                    })),
                )
                .await?
                .expect(StatusCode::CREATED, "creating a product")?;
            let product_id = made["product_id"].as_str().context("a product id")?;
            let variant_id = made["variants"][0]["variant_id"]
                .as_str()
                .context("a variant id")?;
            let path = format!("/v1/products/{product_id}/variants/{variant_id}/stock");
            api.request(Method::POST, &path)
                .bearer_auth(seller)
                .header("idempotency-key", format!("drill-{}-supply", self.run))
                .json(&json!({"add": supply}))
                .send()
                .await
                .map(super::api::read)
                .context("adding stock")?
                .await
                .expect(StatusCode::OK, "adding stock")?;
            self.status(api, product_id, "waiting").await?;
            match opening {
                Opening::Now => self.status(api, product_id, "on_sale").await?,
                Opening::At(at) => {
                    api.send(
                        Method::POST,
                        &format!("/v1/products/{product_id}/schedules"),
                        Some(seller),
                        Some(&json!({"status": "on_sale",
                            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})),
                    )
                    .await?
                    .expect(StatusCode::CREATED, "scheduling the drop")?;
                }
            }
            products.push(Product {
                product_id: product_id.to_owned(),
                variant_id: variant_id.to_owned(),
                supply,
            });
        }
        Ok(products)
    }

    async fn status(&self, api: &Api, product: &str, to: &str) -> anyhow::Result<()> {
        api.send(
            Method::PUT,
            &format!("/v1/products/{product}/status"),
            Some(&self.seller.access),
            Some(&json!({"status": to})),
        )
        .await?
        .expect(StatusCode::OK, &format!("moving a product to {to}"))?;
        Ok(())
    }

    /// Refreshes every session older than `age`, so that no access token expires during a
    /// scenario.
    pub async fn keep_fresh(&mut self, api: &Api, age: Duration) -> anyhow::Result<()> {
        let stale = |m: &Member| m.signed_in.is_none_or(|at| at.elapsed() > age);
        if stale(&self.seller) {
            self.seller = refresh(api, self.seller.clone())
                .await?
                .context("the seller's session ended")?;
        }
        let buyers = std::mem::take(&mut self.buyers);
        self.buyers = futures_util::stream::iter(buyers)
            .map(|m| async move {
                if !stale(&m) {
                    return Ok(m);
                }
                let login = m.login_id.clone();
                refresh(api, m)
                    .await?
                    .with_context(|| format!("the session of {login} ended"))
            })
            .buffered(CHEAP_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(())
    }

    /// Writes the members with their current refresh tokens (and those the file held
    /// beyond this drill's buyers).
    pub fn keep(&self, api: &Api, kept_file: &Path) -> anyhow::Result<()> {
        let mut buyers = self.buyers.clone();
        buyers.extend(self.spare.iter().cloned());
        write_kept(
            kept_file,
            &Kept {
                url: api_url(api),
                seller: Some(self.seller.clone()),
                buyers,
            },
        )
    }
}

fn api_url(api: &Api) -> String {
    api.request(Method::GET, "/").build().map_or_else(
        |_| String::new(),
        |r| r.url().origin().ascii_serialization(),
    )
}

async fn login(api: &Api, login_id: &str, password: &str) -> anyhow::Result<String> {
    token(&sign_in(api, login_id, password).await?, "access_token")
}

/// The token pair of a login.
async fn sign_in(api: &Api, login_id: &str, password: &str) -> anyhow::Result<Value> {
    api.send(
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&json!({"login_id": login_id, "password": password, "device_name": "drill"})),
    )
    .await?
    .expect(StatusCode::OK, "logging in")
}

fn token(pair: &Value, name: &str) -> anyhow::Result<String> {
    Ok(pair[name].as_str().context("a token")?.to_owned())
}

/// Signs `member` in again with its refresh token; `None` when its session is gone (the
/// shop was reset, the token expired), so that a new member takes its place.
async fn refresh(api: &Api, mut member: Member) -> anyhow::Result<Option<Member>> {
    let answer = api
        .send(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": member.refresh})),
        )
        .await?;
    if answer.status == StatusCode::UNAUTHORIZED {
        return Ok(None);
    }
    let pair = answer.expect(StatusCode::OK, "refreshing a session")?;
    member.access = token(&pair, "access_token")?;
    member.refresh = token(&pair, "refresh_token")?;
    member.signed_in = Some(Instant::now());
    Ok(Some(member))
}

/// Signs up a member, has the admin grant it `role` (`basic` verifies it), and signs it in.
async fn new_member(
    api: &Api,
    admin: &str,
    run: &str,
    n: usize,
    role: &str,
) -> anyhow::Result<Member> {
    let password = super::tag() + &super::tag() + &super::tag();
    let login_id = if n == usize::MAX {
        format!("drill{run}s")
    } else {
        format!("drill{run}b{n}")
    };
    // 8 digits from the run's tag and the member's number: distinct within a run, and across
    // runs unless two tags collide in their first digits.
    let seed = run
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
    let phone = (seed.wrapping_add(n as u64)) % 100_000_000;
    let made = api
        .send(
            Method::POST,
            "/v1/members",
            None,
            Some(&json!({
                "login_id": login_id,
                "password": password,
                "name": "Drill Buyer",
                "phone": format!("010-{:04}-{:04}", phone / 10_000, phone % 10_000),
                "email": format!("{login_id}@drill.example.com"),
                "address": {"line1": "Teheran-ro 1", "line2": format!("Drill {n}"), "postal_code": "06236"},
            })),
        )
        .await?
        .expect(StatusCode::CREATED, "signing a member up")?;
    let member_id = made["id"].as_str().context("a member id")?.to_owned();
    api.send(
        Method::PUT,
        &format!("/v1/admin/members/{member_id}/role"),
        Some(admin),
        Some(&json!({"role": role})),
    )
    .await?
    .expect(StatusCode::OK, "granting a drill member its role")?;
    let pair = sign_in(api, &login_id, &password).await?;
    let access = token(&pair, "access_token")?;
    let addresses = api
        .send(Method::GET, "/v1/members/me/addresses", Some(&access), None)
        .await?
        .expect(StatusCode::OK, "reading a member's addresses")?;
    let address_id = addresses["items"][0]["id"]
        .as_str()
        .context("the member's address")?
        .to_owned();
    Ok(Member {
        login_id,
        member_id,
        address_id,
        refresh: token(&pair, "refresh_token")?,
        access,
        signed_in: Some(Instant::now()),
    })
}

fn read_kept(path: &Path, api: &Api) -> anyhow::Result<Kept> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let kept: Kept = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a drill's members file", path.display()))?;
    if kept.url != api_url(api) {
        // Another shop's members: start afresh (the file is rewritten for this one).
        return Ok(Kept::default());
    }
    Ok(kept)
}

fn write_kept(path: &Path, kept: &Kept) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let temporary = path.with_extension("json.new");
    // A fresh file of our own (never through a link or a file left there): it holds tokens.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    // A file left over from an earlier run keeps its mode on open: it holds tokens.
    std::fs::set_permissions(
        &temporary,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    file.write_all(serde_json::to_string(kept)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
