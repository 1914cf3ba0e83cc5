//! The generated key file of the embedded default (`./data/keys.toml`, mode 0600): so that
//! `openrun` with no settings at all still has a JWT secret, data keys and a blind-index key
//! that survive restarts. Production sets `JWT_SECRET`, `OPENRUN_DATA_KEYS` and
//! `OPENRUN_BLIND_INDEX_KEY` instead; each variable that is set wins over the file.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use super::{DataKey, KEY_LEN, random_bytes};

/// The three secrets as written in the file (base64, and `id:base64,...` for data keys).
#[derive(Debug, Deserialize)]
pub struct KeyFile {
    /// HS256 signing secret of access tokens.
    pub jwt_secret: String,
    /// The blind-index HMAC key.
    pub blind_index_key: String,
    /// `id:base64key,...`, the first is current.
    pub data_keys: String,
}

impl KeyFile {
    /// Fresh random secrets.
    pub fn generate() -> Self {
        Self {
            jwt_secret: STANDARD.encode(random_bytes(KEY_LEN)),
            blind_index_key: STANDARD.encode(random_bytes(KEY_LEN)),
            data_keys: DataKey::generate("k1").to_setting(),
        }
    }

    /// Reads the file, creating it with fresh secrets if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            let file = Self::generate();
            file.write_new(path)?;
            return Ok(file);
        }
        Figment::from(Toml::file(path))
            .extract()
            .map_err(|e| format!("{}: {}", path.display(), e.kind))
    }

    /// Replaces the file's content (keeping mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("toml.new");
        let _ = std::fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn write_new(&self, path: &Path) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(fail)?;
        write!(
            file,
            "# openrun secrets, generated because JWT_SECRET, OPENRUN_DATA_KEYS and\n\
             # OPENRUN_BLIND_INDEX_KEY are not set. Losing this file makes the personal data\n\
             # in the database unreadable: back it up with the database.\n\
             jwt_secret = \"{}\"\nblind_index_key = \"{}\"\ndata_keys = \"{}\"\n",
            self.jwt_secret, self.blind_index_key, self.data_keys
        )
        .map_err(fail)
    }
}
