//! Integration tests: the real `credproxy` binary on an ephemeral port, with in-process fakes
//! (JWKS, upstream). One test binary so the fakes link once.

mod harness;

mod audit;
mod authn;
mod cli;
mod edges;
mod forward;
mod headers;
mod labels;
mod lifecycle;
mod limits;
mod mtls;
mod oauth2;
mod observability;
mod parity;
mod paths;
mod policy;
mod redaction;
mod report;
mod rotation;
mod secrets;
mod shared_limits;
mod signing;
