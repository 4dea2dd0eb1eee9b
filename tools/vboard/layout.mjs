// The shared memory between the virtual board's hardware (tools/virtual_board.mjs,
// the main thread) and its CPU (tools/vboard/cpu.mjs, a worker thread that runs
// the MicroPython interpreter). Int32 slots of `ctl`:
export const RPC = 0; // 1 when the hardware has answered the CPU's request
export const IRQ = 1; // 1 after Ctrl-C while code runs: the CPU raises KeyboardInterrupt
export const STATUS = 2; // the answer: >= 0 a value, < 0 -errno (ESP32 numbers) or EXC
export const LEN = 3; // bytes of the answer in `data`
export const HEAD = 4; // console bytes received so far (the CPU waits on this slot)
export const TAIL = 5; // console bytes the CPU has taken
export const RUNNING = 6; // 1 while the CPU executes Python (Ctrl-C interrupts it then)
export const CUT = 7; // power cut armed: flash writes to go before the one that tears
export const TEXT = 8; // bytes of the answer's text after the data
export const CTL_SLOTS = 16;
export const RTC_SLOT = 0; // Float64 slot of `clock`: board RTC minus host clock, ms
export const RING_BYTES = 1 << 16;
export const DATA_BYTES = 1 << 18;
export const EXC = -99999; // the answer is an exception: its "Type:text" follows the data

export function makeShared() {
  return {
    ctl: new SharedArrayBuffer(CTL_SLOTS * 4),
    clock: new SharedArrayBuffer(8),
    ring: new SharedArrayBuffer(RING_BYTES),
    data: new SharedArrayBuffer(DATA_BYTES),
    cutSuffix: new SharedArrayBuffer(64),
  };
}
