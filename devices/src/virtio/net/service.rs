//! A service the VMM answers from inside a network device, such as instance metadata: frames
//! the guest sends to it never reach the TAP, and its answers reach the guest as received
//! frames. The device knows only this trait; what the service is lives with the VMM.

/// A service on a network device's link.
pub trait FrameService: Send {
    /// Offers a frame the guest sent (Ethernet, without the virtio header). Returns `true` when
    /// the frame was the service's: it is consumed and not sent to the TAP.
    fn offer(&mut self, frame: &[u8]) -> bool;

    /// Writes the next frame for the guest (Ethernet, without the virtio header) into `buf`
    /// and returns its length, or `None` when the service has nothing to send. A frame longer
    /// than `buf` is dropped by the service.
    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize>;

    /// Whether [`Self::next_frame`] has something.
    fn has_frames(&self) -> bool;
}
