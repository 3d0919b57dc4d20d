//! The test broker's SASL: SaslHandshake and SaslAuthenticate answered by rsasl's server side
//! (PLAIN checks the user's password; OAUTHBEARER checks the token against a list), so icefall's
//! client is checked against a SASL implementation it did not write.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::oauthbearer::properties::{OAuthBearerError, OAuthBearerValidate};
use rsasl::prelude::{Mechname, SASLConfig, SASLServer, Session, SessionError, State, Validation};
use rsasl::property::{AuthId, OAuthBearerToken, Password};
use rsasl::validate::{Validate, ValidationError};

use super::{SaslSetup, State as BrokerState};

/// (mechanism, user or token, accepted), as the callbacks saw them.
type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

struct Checked;
impl Validation for Checked {
    type Value = bool;
}

struct Callback {
    setup: SaslSetup,
    seen: Seen,
}

impl SessionCallback for Callback {
    fn callback(
        &self,
        _: &SessionData,
        context: &Context,
        request: &mut Request,
    ) -> Result<(), SessionError> {
        if request.is::<OAuthBearerValidate>() {
            // rsasl hands over the whole `auth` value: the scheme, then the token (RFC 6750).
            let auth = context.get_ref::<OAuthBearerToken>().unwrap_or("");
            let token = auth.strip_prefix("Bearer ").unwrap_or(auth).to_string();
            let ok = self.setup.tokens.contains(&token);
            self.seen
                .lock()
                .unwrap()
                .push(("OAUTHBEARER".into(), token, ok));
            let verdict = if ok {
                Ok(())
            } else {
                Err(OAuthBearerError::new("invalid_token", None, None))
            };
            request.satisfy::<OAuthBearerValidate>(&verdict)?;
        }
        Ok(())
    }

    fn validate(
        &self,
        data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let plain = data.mechanism().mechanism == "PLAIN";
        validate.with::<Checked, _>(|| {
            if !plain {
                return Ok(true);
            }
            let user = context.get_ref::<AuthId>().unwrap_or("").to_string();
            let pw = context.get_ref::<Password>().unwrap_or(b"");
            let ok = self
                .setup
                .users
                .get(&user)
                .is_some_and(|p| p.as_bytes() == pw);
            self.seen.lock().unwrap().push(("PLAIN".into(), user, ok));
            Ok(ok)
        })?;
        Ok(())
    }
}

/// One connection's SASL state.
#[derive(Default)]
pub struct Conn {
    pub authenticated: bool,
    session: Option<Session<Checked>>,
    seen: Seen,
}

impl Conn {
    pub fn handshake(
        &mut self,
        setup: Option<&SaslSetup>,
        req: &SaslHandshakeRequest,
    ) -> SaslHandshakeResponse {
        let mut r = SaslHandshakeResponse::default();
        let Some(setup) = setup else {
            r.error_code = 33;
            return r;
        };
        r.mechanisms = setup
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let wanted = req.mechanism.to_string();
        if !setup.mechanisms.contains(&wanted) {
            r.error_code = 33;
            return r;
        }
        let config: Arc<SASLConfig> = SASLConfig::builder()
            .with_defaults()
            .with_callback(Callback {
                setup: setup.clone(),
                seen: self.seen.clone(),
            })
            .expect("sasl config");
        let session = Mechname::parse(wanted.as_bytes())
            .ok()
            .and_then(|m| SASLServer::<Checked>::new(config).start_suggested(m).ok());
        match session {
            Some(s) => self.session = Some(s),
            None => r.error_code = 33,
        }
        r
    }

    pub fn authenticate(
        &mut self,
        setup: Option<&SaslSetup>,
        req: &SaslAuthenticateRequest,
        state: &Mutex<BrokerState>,
    ) -> SaslAuthenticateResponse {
        let mut r = SaslAuthenticateResponse::default();
        let failed = |r: &mut SaslAuthenticateResponse, why: &str| {
            r.error_code = 58;
            r.error_message = Some(StrBytes::from_string(format!(
                "Authentication failed: {why}"
            )));
        };
        let Some(session) = self.session.as_mut() else {
            r.error_code = 34; // ILLEGAL_SASL_STATE
            return r;
        };
        let mut out = Cursor::new(Vec::new());
        let step = session.step(Some(&req.auth_bytes), &mut out);
        let seen: Vec<_> = self.seen.lock().unwrap().drain(..).collect();
        state.lock().unwrap().authentications.extend(seen);
        match step {
            Err(e) => {
                self.session = None;
                failed(&mut r, &e.to_string());
            }
            Ok(State::Running) => r.auth_bytes = out.into_inner().into(),
            Ok(State::Finished(_)) => {
                if session.validation() == Some(true) {
                    self.authenticated = true;
                    r.auth_bytes = out.into_inner().into();
                    r.session_lifetime_ms = setup.map_or(0, |s| s.lifetime_ms);
                } else {
                    failed(&mut r, "invalid credentials");
                }
                self.session = None;
            }
        }
        r
    }
}
