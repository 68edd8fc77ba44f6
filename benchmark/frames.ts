// Length-prefixed frames (a u32 little-endian length, then the payload): how the Node
// `net` and `tls` baselines delimit messages on a byte stream.

/** Calls `onFrame` with each whole frame (prefix included) and its payload length, as bytes arrive on `sock`. */
export function onFrames(sock: { on(event: 'data', listener: (d: Buffer) => void): unknown }, onFrame: (frame: Buffer, len: number) => void): void {
  let pending: Buffer = Buffer.alloc(0)
  sock.on('data', (d: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d
    let off = 0
    while (pending.length - off >= 4) {
      const len = pending.readUInt32LE(off)
      if (pending.length - off < 4 + len) break
      onFrame(pending.subarray(off, off + 4 + len), len)
      off += 4 + len
    }
    pending = pending.subarray(off)
  })
}
