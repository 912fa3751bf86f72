//! The access-control seam (UCON): implement [`AccessPolicy`] and call
//! [`export_access!`](crate::export_access). Enable the SDK's `access`
//! feature (and turn off the default `lb` one).
//!
//! The gateway hands every decision the subject, object and context
//! attributes as JSON ([`Usage`]), enforces the answer (403 with the reason,
//! 403 with where to fulfil an obligation), applies the attribute updates
//! atomically on every node, and fails closed.

use crate::bindings::access::exports::switchyard::policy::access as wit;
pub use wit::{Decision, Obligation, Outcome, Permit, Update};
use crate::Config;
use serde_json::Value;

/// One usage, its attribute sets parsed.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Token claims (`sub` is the subject id), static and mutable attributes.
    pub subject: Value,
    /// The route's object attributes and path captures.
    pub object: Value,
    /// The right exercised (`read`, `write`, or the route's name for it).
    pub right: String,
    /// `now_ms`, `hour`, `minute` (UTC), `weekday` (0 = Monday), `method`
    /// (the HTTP method, `"POST"`), `client_ip`.
    pub context: Value,
}

impl Usage {
    #[doc(hidden)]
    pub fn from_wit(u: &wit::Usage) -> Self {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
        Self { subject: parse(&u.subject), object: parse(&u.object), right: u.right.clone(), context: parse(&u.context) }
    }

    /// A subject attribute.
    pub fn subject_attr(&self, name: &str) -> Option<&Value> {
        self.subject.get(name)
    }

    /// A subject attribute as a number (mutable attributes are numbers).
    pub fn subject_number(&self, name: &str) -> i64 {
        self.subject.get(name).and_then(Value::as_i64).unwrap_or(0)
    }
}

/// Permit with no updates and no ongoing checks.
pub fn permit() -> Decision {
    Decision::Permit(Permit { pre_updates: Vec::new(), ongoing_every_ms: None })
}

/// Deny with a short reason.
pub fn deny(reason: impl Into<String>) -> Decision {
    Decision::Deny(reason.into())
}

/// An access policy. One value lives in each Wasm instance; mutable
/// attributes live in the gateway's attribute store, not here.
pub trait AccessPolicy: Sized + 'static {
    /// Build the policy from its config table; an error (naming the rule)
    /// fails the load.
    fn configure(config: &Config) -> Result<Self, String>;
    /// Before the usage.
    fn pre_decision(&mut self, usage: &Usage) -> Decision;
    /// While it lasts; an error revokes it with that reason.
    fn ongoing_decision(&mut self, _usage: &Usage, _elapsed_ms: u64) -> Result<(), String> {
        Ok(())
    }
    /// After it ended: attribute updates.
    fn post_update(&mut self, _usage: &Usage, _outcome: &Outcome) -> Vec<Update> {
        Vec::new()
    }
}

#[doc(hidden)]
pub struct Runner<T> {
    policy: Option<T>,
}

#[doc(hidden)]
impl<T: AccessPolicy> Runner<T> {
    pub const fn new() -> Self {
        Self { policy: None }
    }

    pub fn configure(&mut self, config: String) -> Result<(), String> {
        crate::host::install_panic_hook();
        let config = Config::from_json(&config)?;
        self.policy = Some(T::configure(&config)?);
        Ok(())
    }

    pub fn pre_decision(&mut self, u: &wit::Usage) -> Decision {
        match self.policy.as_mut() {
            Some(p) => p.pre_decision(&Usage::from_wit(u)),
            None => deny("access policy not configured"),
        }
    }

    pub fn ongoing_decision(&mut self, u: &wit::Usage, elapsed_ms: u64) -> Result<(), String> {
        self.policy.as_mut().ok_or("access policy not configured")?.ongoing_decision(&Usage::from_wit(u), elapsed_ms)
    }

    pub fn post_update(&mut self, u: &wit::Usage, outcome: &Outcome) -> Vec<Update> {
        self.policy.as_mut().map_or_else(Vec::new, |p| p.post_update(&Usage::from_wit(u), outcome))
    }
}

/// Export an [`AccessPolicy`] as the component's `access` interface
/// (world `access-policy`).
#[macro_export]
macro_rules! export_access {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::access::exports::switchyard::policy::access as __wit;
            struct __SwitchyardAccess;
            ::std::thread_local! {
                static RUNNER: ::core::cell::RefCell<$crate::access::Runner<$policy>> =
                    const { ::core::cell::RefCell::new($crate::access::Runner::new()) };
            }
            impl __wit::Guest for __SwitchyardAccess {
                fn configure(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().configure(config))
                }
                fn pre_decision(usage: __wit::Usage) -> __wit::Decision {
                    RUNNER.with(|r| r.borrow_mut().pre_decision(&usage))
                }
                fn ongoing_decision(usage: __wit::Usage, elapsed_ms: u64) -> ::core::result::Result<(), ::std::string::String> {
                    RUNNER.with(|r| r.borrow_mut().ongoing_decision(&usage, elapsed_ms))
                }
                fn post_update(usage: __wit::Usage, outcome: __wit::Outcome) -> ::std::vec::Vec<__wit::Update> {
                    RUNNER.with(|r| r.borrow_mut().post_update(&usage, &outcome))
                }
            }
            $crate::bindings::access::__export_access!(__SwitchyardAccess with_types_in $crate::bindings::access);
        };
    };
}
