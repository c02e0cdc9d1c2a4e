//! What one request to Ximilar is, before any transport sends it: which call
//! (the `endpoint` label of the upstream metrics) and its HTTP parts. A leaf:
//! the retry loop (`retry_loop`), the request builders (`ximilar`) and the runtime's
//! transport all depend on it, and it on nothing of theirs.

/// Which Ximilar call; also the `endpoint` label of the upstream metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XimilarCall {
    DetectTags,
    Tags,
    Classify,
    VisualKnn,
    Account,
}

impl XimilarCall {
    pub fn label(self) -> &'static str {
        match self {
            XimilarCall::DetectTags => "detect_tags",
            XimilarCall::Tags => "tags",
            XimilarCall::Classify => "classify",
            XimilarCall::VisualKnn => "visual_knn",
            XimilarCall::Account => "account",
        }
    }

    /// Whether Ximilar charges credits for it (every call that sends an image).
    pub fn is_billed(self) -> bool {
        self != XimilarCall::Account
    }
}

/// One request to Ximilar, transport-neutral. `headers` hold the token: this
/// value is never logged or echoed.
#[derive(Clone, PartialEq)]
pub struct UpstreamRequest {
    pub endpoint: XimilarCall,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Debug for UpstreamRequest {
    // Headers carry the token and the collection id: leave them out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}
