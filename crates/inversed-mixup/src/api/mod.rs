//! The one way in for front ends (the `imix` command, the Python package, a server): requests
//! whose defaults are the documented ones and whose `validate()` holds every check, and the flow
//! of each request, written once, returning rows and the summaries both front ends show.

mod explore;
mod pipeline;
mod requests;
mod summary;

pub use crate::method::mixes::{decode_mixes, invert_mixes, MixBucket, MixRow, MixSummary};
pub use explore::{check_window, explore, ExploreRequest, MixView, MAX_LAMBDAS};
pub use pipeline::{
    augment, check_pair, check_warmup_data, check_warmup_target, interpolate, invert, load_adaptor,
    open_bundle, plan_mixes, read_unlabeled, sample, Augmented, ModelFiles, Pipeline,
};
pub use requests::{
    field_names, from_json, AugmentPlan, AugmentRequest, InterpolateRequest, InvertRequest,
    WarmupRequest, AUGMENT_DECODE, DECODE_BATCH, DEFAULT_GEN_PASSES, DEFAULT_LAMBDA,
    MAX_NEW_TOKENS, NO_REPEAT_NGRAM,
};
pub use summary::{AugmentSummary, LambdaGroup};
