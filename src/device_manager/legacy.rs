//! The legacy devices every VM has: the serial console at 0x3f8 on IRQ 4, the i8042 at
//! 0x60/0x64 on IRQ 1 (reset, and Ctrl-Alt-Del for the host), the boot timer in the MMIO hole,
//! and, with ACPI, fennec's power registers (soft-off, reset, the power button's generic event
//! device) and the pvpanic register. Addresses and IRQs come from [`fennec_boot::layout`].

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use fennec_boot::layout;
use fennec_devices::bus::Bus;
use fennec_devices::legacy::acpi::AcpiPower;
use fennec_devices::legacy::boot_timer::{BootTime, BootTimer};
use fennec_devices::legacy::i8042::I8042;
use fennec_devices::legacy::pvpanic::PvPanic;
use fennec_devices::legacy::serial::{SerialDevice, SerialInput, SerialMetrics, SerialSnapshot};
use fennec_devices::EventFdTrigger;

use super::error::DeviceError;
use crate::console::Console;
use crate::vstate::vm::KvmVm;

/// What ends the VM from the guest's side, each an eventfd the controller watches.
pub struct ExitEvents {
    /// The guest reset through the i8042 or the ACPI reset register.
    pub reset: EventFd,
    /// The guest powered off through ACPI.
    pub power_off: EventFd,
    /// The guest's kernel said it panicked (pvpanic, with ACPI).
    pub panic: EventFd,
}

/// The legacy devices, attached.
pub struct Legacy {
    /// The port I/O bus with the serial port, the i8042 and the ACPI registers.
    pub pio: Bus,
    /// The MMIO bus with the boot timer (the virtio transports join it).
    pub mmio: Bus,
    /// What ends the VM.
    pub exits: ExitEvents,
    /// The ACPI power registers, where the host presses the power button; `None` without ACPI.
    pub acpi: Option<Arc<Mutex<AcpiPower<EventFdTrigger>>>>,
    /// The keyboard controller, where the host presses Ctrl-Alt-Del.
    pub i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    /// The serial port.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Feeds console input to the serial port, for the event loop; `None` without input.
    pub serial_input: Option<SerialInput>,
    /// Serial counters.
    pub serial_metrics: Arc<SerialMetrics>,
    /// The guest's boot time, once its boot timer write arrives.
    pub boot_time: Arc<BootTime>,
}

pub(super) fn eventfd(what: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(what, e))
}

fn clone(evt: &EventFd, what: &'static str) -> Result<EventFd, DeviceError> {
    evt.try_clone().map_err(|e| DeviceError::EventFd(what, e))
}

impl Legacy {
    /// Attaches the legacy devices of `vm` around `console`; a restored VM's serial port
    /// starts with the registers and FIFO it was saved with.
    pub fn attach(
        vm: &KvmVm,
        console: Console,
        acpi: bool,
        serial_state: Option<&SerialSnapshot>,
    ) -> Result<Self, DeviceError> {
        let mut pio = Bus::new();
        let serial_irq = eventfd("the serial interrupt")?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(DeviceError::Kvm)?;
        let serial_metrics = Arc::new(SerialMetrics::default());
        let irq = EventFdTrigger::new(serial_irq);
        let (serial, buffer_ready) = match serial_state {
            None => SerialDevice::new(irq, console.output, serial_metrics.clone()),
            Some(state) => {
                SerialDevice::restored(irq, console.output, serial_metrics.clone(), state)
            }
        }
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
            .map(|input| SerialInput::new(serial.clone(), input, buffer_ready));

        let exits = ExitEvents {
            reset: eventfd("guest reset")?,
            power_off: eventfd("guest power-off")?,
            panic: eventfd("guest panic")?,
        };
        let keyboard_irq = eventfd("the keyboard interrupt")?;
        vm.register_irqfd(&keyboard_irq, layout::KEYBOARD_IRQ)
            .map_err(DeviceError::Kvm)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            EventFdTrigger::new(clone(&exits.reset, "guest reset")?),
            EventFdTrigger::new(keyboard_irq),
        )));
        pio.insert(i8042.clone(), layout::I8042_PORT, layout::I8042_PORT_SIZE)
            .map_err(DeviceError::Bus)?;
        let acpi = match acpi {
            true => Some(attach_acpi(vm, &mut pio, &exits)?),
            false => None,
        };

        let boot_time = Arc::new(BootTime::default());
        let mut mmio = Bus::new();
        mmio.insert(
            Arc::new(Mutex::new(BootTimer::new(
                crate::threads::process_start(),
                boot_time.clone(),
            ))),
            layout::BOOT_TIMER_START,
            layout::BOOT_TIMER_SIZE,
        )
        .map_err(DeviceError::Bus)?;
        Ok(Legacy {
            pio,
            mmio,
            exits,
            acpi,
            i8042,
            serial,
            serial_input,
            serial_metrics,
            boot_time,
        })
    }
}

/// The ACPI power registers on the port I/O bus: power-off and reset signal the VMM's
/// eventfds, the power button raises the generic event device's interrupt. Beside them the
/// pvpanic register, which only ACPI describes, signals the panic eventfd.
fn attach_acpi(
    vm: &KvmVm,
    pio: &mut Bus,
    exits: &ExitEvents,
) -> Result<Arc<Mutex<AcpiPower<EventFdTrigger>>>, DeviceError> {
    let event_irq = eventfd("the ACPI event interrupt")?;
    vm.register_irqfd(&event_irq, layout::GED_IRQ)
        .map_err(DeviceError::Kvm)?;
    let power = Arc::new(Mutex::new(AcpiPower::new(
        EventFdTrigger::new(clone(&exits.power_off, "guest power-off")?),
        EventFdTrigger::new(clone(&exits.reset, "guest reset")?),
        EventFdTrigger::new(event_irq),
    )));
    pio.insert(
        power.clone(),
        layout::ACPI_PM_PORT,
        layout::ACPI_PM_PORT_SIZE,
    )
    .map_err(DeviceError::Bus)?;
    let pvpanic = PvPanic::new(EventFdTrigger::new(clone(&exits.panic, "guest panic")?));
    pio.insert(
        Arc::new(Mutex::new(pvpanic)),
        layout::PVPANIC_PORT,
        layout::PVPANIC_PORT_SIZE,
    )
    .map_err(DeviceError::Bus)?;
    Ok(power)
}
