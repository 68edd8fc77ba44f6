/** Endpoint URLs, parsed by the Rust core so every language agrees on them. */
import { binding, native, type ParsedEndpoint } from './native.js'

/** A parsed endpoint URL (see the fields' docs on `ParsedEndpoint`). */
export type Endpoint = Omit<ParsedEndpoint, 'params'> & {
  /** Query parameters, in order, as `[key, value]`. */
  params: Array<[string, string]>
}

/** Parses an endpoint URL; throws `ERR_BAD_URL` saying what is wrong. */
export function parseEndpoint(url: string): Endpoint {
  return native(() => binding.parseEndpoint(String(url))) as Endpoint
}
