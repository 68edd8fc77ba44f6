// What the benchmarks and the tests need from Debian (sockperf, nats-server, nftables),
// installed with apt-get when missing: the project installs what it needs itself.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

/** Installs `pkg` with apt-get when `present()` says it is missing; whether it is there afterwards. */
export function ensureDebian(pkg: string, present: () => boolean): boolean {
  if (present()) return true
  const install = () => spawnSync('apt-get', ['install', '-y', '-q', pkg], { stdio: 'ignore' }).status === 0
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' })
    install()
  }
  return present()
}

/** Where Debian puts nftables' `nft` (called by its path: npm puts another `nft`, @vercel/nft, first on the PATH). */
export const NFT = '/usr/sbin/nft'

/** Each package, and how to tell it is there. */
export const ensure = {
  sockperf: () => ensureDebian('sockperf', () => !spawnSync('sockperf', ['--version'], { stdio: 'ignore' }).error),
  natsServer: () => ensureDebian('nats-server', () => existsSync('/usr/sbin/nats-server')),
  nftables: () => ensureDebian('nftables', () => existsSync(NFT)),
}
