//! Products: each folder under `products_dir` holds a `product.toml` and the numbered SQL
//! migrations of its tenant schema (`0001_name.sql`, applied in order, once per tenant).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::{Context as _, Error, Result},
    naming::{quote_ident, validate_product_name},
};

/// A product's definition, read from its folder.
#[derive(Debug, Clone)]
pub struct Product {
    /// The folder's name, as tenants and payloads name the product.
    pub name: String,
    /// The name people see, from `product.toml`.
    pub display_name: String,
    /// The product's folder.
    pub dir: PathBuf,
    /// Tables Cleanup may prune, from `product.toml`.
    pub prunable: Vec<Prunable>,
    /// Its migration files, in version order.
    pub migrations: Vec<ProductMigration>,
}

/// A table Cleanup may prune and the timestamp column that dates its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prunable {
    /// A table of the tenant's schema.
    pub table: String,
    /// Its timestamp column: rows older than the cutoff go.
    pub column: String,
}

/// One migration file of a product.
#[derive(Debug, Clone)]
pub struct ProductMigration {
    /// The number the file name starts with.
    pub version: i64,
    /// The rest of the file name, without `.sql`.
    pub name: String,
    /// The file's SQL.
    pub sql: String,
    /// sha256 of the file, so a migration edited after it ran is noticed.
    pub checksum: String,
}

impl ProductMigration {
    /// `0002_events`: how logs and errors name it.
    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductFile {
    display_name: String,
    #[serde(default)]
    prunable: Vec<Prunable>,
}

/// Loads the product `name` from `products_dir`.
pub fn load(products_dir: &Path, name: &str) -> Result<Product> {
    validate_product_name(name)?;
    let dir = products_dir.join(name);
    if !dir.join("product.toml").is_file() {
        return Err(Error::NotFound(format!(
            "product '{name}' has no definition at {} (check products_dir)",
            dir.join("product.toml").display()
        )));
    }
    let text = std::fs::read_to_string(dir.join("product.toml")).context(format!("failed to read {}/product.toml", dir.display()))?;
    let file: ProductFile =
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}/product.toml is not valid: {}", dir.display(), e.message())))?;
    for p in &file.prunable {
        for ident in [&p.table, &p.column] {
            if quote_ident(ident) != format!("\"{ident}\"") || ident.is_empty() {
                return Err(Error::Invalid(format!("product '{name}': prunable name '{ident}' is not a plain identifier")));
            }
        }
    }
    let migrations = load_migrations(&dir)?;
    Ok(Product { name: name.to_owned(), display_name: file.display_name, dir, prunable: file.prunable, migrations })
}

/// Loads every product folder under `products_dir`.
pub fn load_all(products_dir: &Path) -> Result<Vec<Product>> {
    let entries = std::fs::read_dir(products_dir).context(format!("failed to read products_dir {}", products_dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.context(format!("failed to read products_dir {}", products_dir.display()))?;
        if entry.path().join("product.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names.iter().map(|name| load(products_dir, name)).collect()
}

fn load_migrations(dir: &Path) -> Result<Vec<ProductMigration>> {
    let mut migrations = Vec::new();
    for entry in std::fs::read_dir(dir).context(format!("failed to read {}", dir.display()))? {
        let path = entry.context(format!("failed to read {}", dir.display()))?.path();
        let file_name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".sql") else {
            continue;
        };
        let (version, name) = stem
            .split_once('_')
            .and_then(|(v, n)| Some((v.parse::<i64>().ok()?, n.to_owned())))
            .ok_or_else(|| Error::Invalid(format!("migration file {} must be named <number>_<name>.sql", path.display())))?;
        let sql = std::fs::read_to_string(&path).context(format!("failed to read {}", path.display()))?;
        let checksum = Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        migrations.push(ProductMigration { version, name, sql, checksum });
    }
    migrations.sort_by_key(|m| m.version);
    if let Some(w) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(Error::Invalid(format!("{}: two migrations share version {}", dir.display(), w[0].version)));
    }
    Ok(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_product_loads_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/products");
        let demo = load(&dir, "demo").unwrap();
        assert_eq!(demo.prunable, vec![Prunable { table: "events".into(), column: "created_at".into() }]);
        let versions: Vec<i64> = demo.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2]);
        assert!(load(&dir, "nope").unwrap_err().to_string().contains("no definition"));
    }
}
