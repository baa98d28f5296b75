//! The Vxlan backend (being built).

use crate::{Backend, BackendConfig, BackendData, BackendKind, OverlayError, Peer, PeerSync};

pub struct VxlanBackend {
    config: BackendConfig,
}

impl VxlanBackend {
    pub fn new(config: BackendConfig) -> Result<VxlanBackend, OverlayError> {
        Err(OverlayError::Config(format!(
            "the {} backend is not built yet",
            config.kind
        )))
    }
}

impl Backend for VxlanBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vxlan
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
