//! Wires devices to the buses and to KVM interrupts: the serial console at 0x3f8 on IRQ 4 and the
//! i8042 at 0x60/0x64. Ports and IRQs come from [`fennec_boot::layout`].

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use fennec_boot::layout;
use fennec_devices::bus::{Bus, BusError};
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::serial::{
    ConsoleIn, ConsoleOut, SerialDevice, SerialInput, SerialMetrics,
};
use fennec_devices::EventFdTrigger;

use crate::vstate::vm::{KvmVm, VmError};

/// Errors setting up devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Creating an eventfd failed.
    #[error("Failed to create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    /// Two devices claim the same range.
    #[error("Failed to place a device on the bus")]
    Bus(#[source] BusError),
    /// Connecting an interrupt failed.
    #[error("Failed to connect a device interrupt")]
    Irq(#[source] VmError),
}

/// The guest's console: where its serial output goes and where its input comes from.
pub struct Console {
    /// Receives every byte the guest writes to its serial port.
    pub output: ConsoleOut,
    /// Bytes to type into the guest's serial port; `None` for no input.
    pub input: Option<Box<dyn ConsoleIn>>,
}

/// The devices of one VM.
pub struct DeviceManager {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// Fires when the guest resets through the i8042.
    pub reset_evt: EventFd,
    /// Feeds console input to the serial port, for the event loop; `None` without input.
    pub serial_input: Option<SerialInput>,
    /// Serial counters.
    pub serial_metrics: Arc<SerialMetrics>,
}

fn eventfd(what: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(what, e))
}

impl DeviceManager {
    /// Creates the legacy devices of `vm` around `console`.
    pub fn new(vm: &KvmVm, console: Console) -> Result<Self, DeviceError> {
        let mut pio = Bus::new();

        let serial_irq = eventfd("the serial interrupt")?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(DeviceError::Irq)?;
        let serial_metrics = Arc::new(SerialMetrics::default());
        let (serial, buffer_ready) = SerialDevice::new(
            EventFdTrigger::new(serial_irq),
            console.output,
            serial_metrics.clone(),
        )
        .map_err(|e| DeviceError::EventFd("serial input", e))?;
        let serial = Arc::new(Mutex::new(serial));
        pio.insert(
            serial.clone(),
            layout::SERIAL_PORT,
            layout::SERIAL_PORT_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        let serial_input = console
            .input
            .map(|input| SerialInput::new(serial, input, buffer_ready));

        let reset_evt = eventfd("guest reset")?;
        let reset_trigger = reset_evt
            .try_clone()
            .map_err(|e| DeviceError::EventFd("guest reset", e))?;
        let i8042 = Arc::new(Mutex::new(I8042::new(EventFdTrigger::new(reset_trigger))));
        pio.insert(i8042, layout::I8042_PORT, layout::I8042_PORT_SIZE)
            .map_err(DeviceError::Bus)?;

        Ok(DeviceManager {
            pio,
            mmio: Bus::new(),
            reset_evt,
            serial_input,
            serial_metrics,
        })
    }
}
