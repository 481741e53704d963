//! What code outside the library (the binary, tests, benches, fuzz targets) reaches:
//! re-exports of crate-private modules' items, so the crate's own items stay `pub(crate)`
//! and `unreachable_pub` shows anything made `pub` by accident. Not an API.

pub mod body {
    pub use crate::body::*;
}
pub mod fuzzing {
    pub use crate::fuzzing::*;
}
pub mod check {
    pub use crate::check::run;
    pub use crate::check::Options;
}
pub mod config {
    pub use crate::config::Config;
    pub mod units {
        pub use crate::config::units::Duration;
        pub use crate::config::units::Size;
    }
}
pub mod mnet {
    pub use crate::mnet::client;
    pub use crate::mnet::inbound;
    pub use crate::mnet::keys;
    pub use crate::mnet::MnetState;
    pub mod cli {
        pub use crate::mnet::cli::run;
        pub use crate::mnet::cli::MnetCommand;
    }
    pub mod config {
        pub use crate::mnet::config::KeyChangePolicy;
        pub use crate::mnet::config::KeyswapPolicy;
        pub use crate::mnet::config::MnetConfig;
        pub use crate::mnet::config::MnetPeerConfig;
    }
    pub mod metrics {
        pub use crate::mnet::metrics::MnetMetrics;
    }
    pub mod xmlrpc {
        pub use crate::mnet::xmlrpc::write_call;
        pub use crate::mnet::xmlrpc::MethodCall;
        pub use crate::mnet::xmlrpc::Value;
    }
}
pub mod observe {
    pub mod config {
        pub use crate::observe::config::LogConfig;
        pub use crate::observe::config::LogFormat;
    }
    pub mod event_log {
        pub use crate::observe::event_log::JsonLines;
    }
    pub mod redact {
        pub use crate::observe::redact::redact_target;
    }
    pub mod sink {
        pub use crate::observe::sink::close_all;
    }
}
pub mod proxy {
    pub mod headers {
        pub use crate::proxy::headers::request_header_kinds;
    }
    pub mod sanitize {
        pub use crate::proxy::sanitize::sanitize;
        pub use crate::proxy::sanitize::SanitizeInput;
    }
    pub mod upstream {
        pub use crate::proxy::upstream::direct;
    }
}
pub mod route {
    pub use crate::route::classify;
    pub use crate::route::RouteTable;
}
pub mod server {
    pub use crate::server::Server;
    pub use crate::server::ServerError;
}
pub mod sso {
    pub mod session {
        pub use crate::sso::session::SessionProbe;
    }
}
pub mod state {
    pub use crate::state::State;
}
pub mod store {
    pub use crate::store::MemoryStore;
    pub use crate::store::Store;
    pub mod config {
        pub use crate::store::config::SentinelConfig;
        pub use crate::store::config::StoreBackend;
        pub use crate::store::config::StoreConfig;
    }
}
pub mod webservice {
    pub use crate::webservice::Guard;
    pub use crate::webservice::WsCall;

    pub use crate::webservice::WebserviceMetrics;

    pub use crate::webservice::entry;
    pub mod config {
        pub use crate::webservice::config::WebserviceConfig;
    }
    pub mod outcome {
        pub use crate::webservice::outcome::CallReport;
        pub use crate::webservice::outcome::OutcomeClass;
    }
    pub mod params {
        pub use crate::webservice::params::inspect_body;
        pub use crate::webservice::params::merge;
        pub use crate::webservice::params::query_params;
    }
}
