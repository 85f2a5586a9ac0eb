//! What to compute: the parameters of SPEC §1–§3 (the ONNX attributes of §5).

use crate::error::{Error, Result};

/// Which attention matrix `A` the resolvent is taken of.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Structure {
    /// Exact ChaCAL (SPEC §1): full softmax attention. O(n²d) causal, O(n³) bidirectional.
    Dense,
    /// Block-structured attention (SPEC §2): exact within blocks, block means across
    /// them, evaluated by the Woodbury/Schur reduction in O(n^{4/3}d).
    Block,
    /// Sparse Transformer strided pattern (SPEC §3), causal only; `stride = 0` picks
    /// `ceil(sqrt(n))`.
    Strided {
        /// Stride `l`.
        stride: usize,
    },
    /// Sparse Transformer fixed pattern (SPEC §3), causal only; `block = 0` picks
    /// `ceil(sqrt(n))`, `summary = 0` picks 1.
    Fixed {
        /// Block length `l`.
        block: usize,
        /// Summary columns `c` per block.
        summary: usize,
    },
    /// Top-k dynamic window (SPEC §3), causal only: `k = ceil(alpha · n^c_exp)`.
    /// `alpha = 0` is the default α = 2 (and C = ½ when `c_exp` is 0 too: `k =
    /// ceil(2·√n)`); see [`topk_window`](crate::cpu::sparse::topk_window).
    TopK {
        /// Scale `α` of the window.
        alpha: f32,
        /// Exponent `C` of the window.
        c_exp: f32,
    },
}

impl Structure {
    /// The name used by the ONNX `structure` attribute.
    pub fn name(&self) -> &'static str {
        match self {
            Structure::Dense => "dense",
            Structure::Block => "block",
            Structure::Strided { .. } => "strided",
            Structure::Fixed { .. } => "fixed",
            Structure::TopK { .. } => "topk",
        }
    }
}

/// Which query stands for a block in the coarse logits `L_IJ = scale · q_I·k̄_J` of
/// [`Structure::Block`] (SPEC §2, the ONNX attribute `coarse_query`). Other structures
/// have no coarse logits and ignore it.
///
/// ```
/// use blockres::CoarseQuery;
/// assert_eq!(CoarseQuery::default(), CoarseQuery::Mean);
/// assert_eq!(CoarseQuery::parse("first"), Some(CoarseQuery::First));
/// assert_eq!(CoarseQuery::parse("middle"), None);
/// assert_eq!(CoarseQuery::First.name(), "first");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoarseQuery {
    /// The mean query `q̄_I` of block I (the default). Causal rows of block I then depend
    /// on the queries of later tokens of their own block: fine for prefill, but not
    /// decodable token by token.
    #[default]
    Mean,
    /// The query of block I's first token, `q̂_I = q_{I·b}`: strictly causal (row i
    /// depends on tokens ≤ i only), same cost; SPEC §6 (decoding) requires it.
    First,
}

impl CoarseQuery {
    /// The name used by the ONNX `coarse_query` attribute.
    pub fn name(&self) -> &'static str {
        match self {
            CoarseQuery::Mean => "mean",
            CoarseQuery::First => "first",
        }
    }

    /// The value of an ONNX `coarse_query` attribute: `"mean"` or `"first"`, else `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(CoarseQuery::Mean),
            "first" => Some(CoarseQuery::First),
            _ => None,
        }
    }
}

/// Parameters of one evaluation. `Config::default()` is the ONNX op's defaults:
/// γ = 0.5, automatic block size, causal, `scale = 1/sqrt(dk)`, block structure,
/// mean coarse queries.
///
/// ```
/// use blockres::{CoarseQuery, Config, Structure};
/// let cfg = Config { gamma: 0.9, causal: false, ..Config::default() };
/// assert_eq!(cfg.structure, Structure::Block);
/// assert_eq!(cfg.coarse_query, CoarseQuery::Mean);
/// let decodable = Config { coarse_query: CoarseQuery::First, ..Config::default() };
/// assert!(decodable.validate().is_ok());
/// assert!(cfg.validate().is_ok());
/// assert!(Config { gamma: 1.0, ..cfg }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Hop discount γ ∈ [0, 1); γ = 0 is plain attention.
    pub gamma: f32,
    /// Block size `b` for [`Structure::Block`]; 0 picks it from n (see
    /// [`auto_block_size`](crate::auto_block_size)).
    pub block_size: usize,
    /// Causal (j ≤ i) or bidirectional attention.
    pub causal: bool,
    /// Logit scale; 0 means `1/sqrt(dk)`.
    pub scale: f32,
    /// Which attention matrix.
    pub structure: Structure,
    /// The block query of the coarse logits of [`Structure::Block`]; ignored by the
    /// other structures.
    pub coarse_query: CoarseQuery,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gamma: 0.5,
            block_size: 0,
            causal: true,
            scale: 0.0,
            structure: Structure::Block,
            coarse_query: CoarseQuery::Mean,
        }
    }
}

impl Config {
    /// Check the parameters alone (shapes are checked by the entry points).
    pub fn validate(&self) -> Result<()> {
        if !(self.gamma >= 0.0 && self.gamma < 1.0) {
            return Err(Error::Param {
                name: "gamma",
                message: format!("must lie in [0, 1), got {}", self.gamma),
            });
        }
        if !self.scale.is_finite() || self.scale < 0.0 {
            return Err(Error::Param {
                name: "scale",
                message: format!(
                    "must be a finite number > 0 (or 0 for 1/sqrt(dk)), got {}",
                    self.scale
                ),
            });
        }
        match self.structure {
            Structure::Dense | Structure::Block => {}
            Structure::Strided { .. } | Structure::Fixed { .. } | Structure::TopK { .. }
                if !self.causal =>
            {
                return Err(Error::Param {
                    name: "structure",
                    message: format!(
                        "'{}' is defined for causal attention only; set causal = 1 or use 'block' or 'dense'",
                        self.structure.name()
                    ),
                });
            }
            // summary = 0 means the default c = 1.
            Structure::Fixed { block, summary } if block > 0 && summary > block => {
                return Err(Error::Param {
                    name: "summary",
                    message: format!("must lie in 1..=stride ({block}) (0 = 1), got {summary}"),
                });
            }
            Structure::TopK { alpha, c_exp } => {
                if !(alpha.is_finite() && alpha >= 0.0) {
                    return Err(Error::Param {
                        name: "alpha",
                        message: format!(
                            "must be a finite number > 0 (or 0 for the default 2), got {alpha}"
                        ),
                    });
                }
                if !(c_exp.is_finite() && (0.0..=1.0).contains(&c_exp)) {
                    return Err(Error::Param {
                        name: "c_exp",
                        message: format!("must lie in [0, 1], got {c_exp}"),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The logit scale actually used for key width `dk`.
    pub fn effective_scale(&self, dk: usize) -> f32 {
        if self.scale == 0.0 {
            1.0 / (dk.max(1) as f32).sqrt()
        } else {
            self.scale
        }
    }
}
