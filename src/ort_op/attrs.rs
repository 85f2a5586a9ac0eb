//! The node attributes of both ops (SPEC §5) as a checked [`Config`] and a [`Device`]:
//! every wrong type or value is an error naming the attribute, what it takes and what
//! it got, at session creation.

use super::api::{Attr, Attrs, Fail};
use super::device::{self, Device};
use crate::{CoarseQuery, Config, Structure};

/// Defaults of the `topk` attributes: 0 leaves the window to the crate, whose default
/// is `k = ceil(2·sqrt(n))` (see `blockres::cpu::sparse::topk_window`).
const DEFAULT_ALPHA: f32 = 0.0;
const DEFAULT_C_EXP: f32 = 0.0;

fn bad_attr(name: &str, expected: &str, got: &str) -> Fail {
    Fail::invalid(format!(
        "blockres.ResolventAttention: attribute {name}: expected {expected}, got {got}"
    ))
}

/// A string attribute's value for a message, in quotes, an interior NUL shown as `\0`.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\0', "\\0"))
}

fn float_attr(a: &Attrs, name: &str, default: f32) -> Result<f32, Fail> {
    match a.float(name)? {
        Attr::Missing => Ok(default),
        Attr::Value(x) => Ok(x),
        Attr::WrongType(t) => Err(bad_attr(name, "a float (e.g. 0.5)", t)),
    }
}

fn int_attr(a: &Attrs, name: &str, default: i64, expected: &str) -> Result<i64, Fail> {
    match a.int(name)? {
        Attr::Missing => Ok(default),
        Attr::Value(x) => Ok(x),
        Attr::WrongType(t) => Err(bad_attr(name, expected, t)),
    }
}

fn count_attr(a: &Attrs, name: &str, default: usize, form: &str) -> Result<usize, Fail> {
    let x = int_attr(a, name, default as i64, form)?;
    usize::try_from(x).map_err(|_| bad_attr(name, form, &x.to_string()))
}

/// Map the node's attributes (SPEC §5) to a checked [`Config`].
pub(super) fn parse_config(a: &Attrs) -> Result<Config, Fail> {
    let d = Config::default();
    let gamma = float_attr(a, "gamma", d.gamma)?;
    let scale = float_attr(a, "scale", d.scale)?;
    let block_size = count_attr(a, "block_size", d.block_size, "an int >= 0 (0 = automatic)")?;
    let causal = match int_attr(a, "causal", i64::from(d.causal), "an int, 0 or 1")? {
        0 => false,
        1 => true,
        x => return Err(bad_attr("causal", "an int, 0 or 1", &x.to_string())),
    };
    let structure_name = match a.string("structure")? {
        Attr::Missing => d.structure.name().to_string(),
        Attr::Value(s) => s,
        Attr::WrongType(t) => {
            return Err(bad_attr(
                "structure",
                "a string: 'block', 'dense', 'strided', 'fixed' or 'topk'",
                t,
            ));
        }
    };
    let stride = count_attr(a, "stride", 0, "an int >= 0 (0 = automatic)")?;
    let summary = count_attr(a, "summary", 1, "an int >= 1 (0 also means 1)")?;
    let alpha = float_attr(a, "alpha", DEFAULT_ALPHA)?;
    let c_exp = float_attr(a, "c_exp", DEFAULT_C_EXP)?;
    let structure = match structure_name.as_str() {
        "block" => Structure::Block,
        "dense" => Structure::Dense,
        "strided" => Structure::Strided { stride },
        "fixed" => Structure::Fixed {
            block: stride,
            summary,
        },
        "topk" => Structure::TopK { alpha, c_exp },
        other => {
            return Err(bad_attr(
                "structure",
                "one of 'block', 'dense', 'strided', 'fixed', 'topk'",
                &quoted(other),
            ));
        }
    };
    // Read and checked for every structure; only `block` has coarse logits to use it.
    let coarse_query = match a.string("coarse_query")? {
        Attr::Missing => d.coarse_query,
        Attr::Value(s) => CoarseQuery::parse(&s)
            .ok_or_else(|| bad_attr("coarse_query", "one of 'mean', 'first'", &quoted(&s)))?,
        Attr::WrongType(t) => {
            return Err(bad_attr("coarse_query", "a string: 'mean' or 'first'", t));
        }
    };
    let cfg = Config {
        gamma,
        block_size,
        causal,
        scale,
        structure,
        coarse_query,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The node's `device` attribute, else `BLOCKRES_DEVICE`, else `auto`. A bad value
/// of the variable fails only nodes that would use it: the attribute wins.
pub(super) fn parse_device(a: &Attrs) -> Result<Device, Fail> {
    match a.string("device")? {
        Attr::Value(s) => {
            Device::parse(&s).ok_or_else(|| bad_attr("device", device::ALLOWED, &quoted(&s)))
        }
        Attr::WrongType(t) => Err(bad_attr("device", "a string: 'auto', 'cpu' or 'gpu'", t)),
        Attr::Missing => Ok(device::env_setting()
            .map_err(Fail::invalid)?
            .unwrap_or(Device::Auto)),
    }
}
