//! Authentication for the gRPC API: one tower layer in front of every
//! service. It resolves the bearer token to a [`Principal`] and puts it in
//! the request's extensions, where handlers read it; a request without a
//! valid token never reaches a handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

use crate::store::{Principal, Store};
use crate::token;

/// Services that answer without a token: health checks and reflection, for
/// probes and tools, and the config stream, which nodes open (node
/// credentials are not part of this protocol version).
const PUBLIC_PREFIXES: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/mockplane.v1.ConfigDiscovery/",
];

#[derive(Clone)]
pub struct AuthLayer {
    store: Arc<dyn Store>,
}

impl AuthLayer {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            store: self.store.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    store: Arc<dyn Store>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if PUBLIC_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Box::pin(self.inner.call(request));
        }
        // The service that was polled ready is the one to call; leave a
        // fresh clone in its place for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            match authenticate(&*store, request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

async fn authenticate(store: &dyn Store, headers: &http::HeaderMap) -> Result<Principal, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Status::unauthenticated(
            "missing credentials: send `authorization: Bearer <token>` (the CLI reads MOCKPLANE_TOKEN)",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?;
    match store.find_token(&token::hash(token)).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(Status::unauthenticated("the token is not valid")),
        Err(error) => {
            tracing::warn!(%error, "could not check a token");
            Err(Status::unavailable(
                "could not check credentials right now; try again shortly",
            ))
        }
    }
}

/// The caller, as the auth layer resolved it.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("missing credentials"))
}
