//! The Udp backend (being built).

use crate::{Backend, BackendConfig, BackendData, BackendKind, OverlayError, Peer, PeerSync};

pub struct UdpBackend {
    config: BackendConfig,
}

impl UdpBackend {
    pub fn new(config: BackendConfig) -> Result<UdpBackend, OverlayError> {
        Err(OverlayError::Config(format!(
            "the {} backend is not built yet",
            config.kind
        )))
    }
}

impl Backend for UdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Udp
    }

    fn pod_mtu(&self) -> u32 {
        self.config.pod_mtu()
    }

    fn ensure_device(&mut self) -> Result<BackendData, OverlayError> {
        Ok(BackendData(None))
    }

    fn sync_peers(&mut self, _peers: &[Peer]) -> Result<PeerSync, OverlayError> {
        Ok(PeerSync::default())
    }

    fn teardown(&mut self) -> Result<(), OverlayError> {
        Ok(())
    }
}
