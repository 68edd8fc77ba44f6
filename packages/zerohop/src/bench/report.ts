/**
 * How `zerohop bench` shows its results: a text table for the terminal, Markdown, and
 * one HTML page with a latency-distribution plot per workload (HdrHistogram's percentile
 * spectrum: every percentile up to 99.999 and the maximum, both axes logarithmic) and a
 * bar chart of messages a second, in inline SVG: no script, nothing to fetch.
 */
import type { BenchReport, BenchRow } from './index.js'
import { WORKLOADS } from './contenders.js'

const COLUMNS: [string, (r: BenchRow) => string][] = [
  ['transport', (r) => r.transport],
  ['peer', (r) => (r.kind === 'floor' ? `${r.peer} (floor)` : r.peer)],
  ['p50 µs', (r) => fixed(r.p50Us)],
  ['p99 µs', (r) => fixed(r.p99Us)],
  ['p99.9 µs', (r) => fixed(r.p999Us)],
  ['p99.99 µs', (r) => fixed(r.p9999Us)],
  ['max µs', (r) => fixed(r.maxUs)],
  ['msg/s', (r) => rate(r.msgsPerSec)],
  ['MB/s', (r) => fixed(r.mbPerSec)],
  ['lost', (r) => String(r.lost)],
  ['vs best alternative', (r) => (r.vsBest === null ? '' : `${r.vsBest.toFixed(2)}×`)],
]

const fixed = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '–')
const rate = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : x >= 1e4 ? `${(x / 1e3).toFixed(0)} K` : x.toFixed(0))
const labelOf = (workload: string): string => WORKLOADS.find((w) => w.id === workload)?.label ?? workload

/** Rows of each workload, in the order they were measured. */
function byWorkload(report: BenchReport): [string, BenchRow[]][] {
  const groups = new Map<string, BenchRow[]>()
  for (const r of report.rows) groups.set(r.workload, [...(groups.get(r.workload) ?? []), r])
  return [...groups]
}

function preface(report: BenchReport): string {
  const m = report.machine
  const skipped = report.skipped.map((s) => `${s.id} (${s.reason})`).join('; ')
  return (
    `${m.rounds} round${m.rounds > 1 ? 's' : ''}${m.quick ? ' (quick)' : ''}, interleaved; ${m.cpus} CPUs, ${m.pinned ? 'this side on CPU 0, the peer on CPU 1' : 'not pinned'}; Node ${m.node}` +
    (skipped ? `\nnot run: ${skipped}` : '') +
    `\nvs best alternative: against the best Node alternative of the workload, > 1 is better (p50 for round trips, msg/s for streams)`
  )
}

/** A table for the terminal. */
export function table(report: BenchReport): string {
  let out = `${preface(report)}\n`
  for (const [workload, rows] of byWorkload(report)) {
    const cells = [COLUMNS.map(([h]) => h), ...rows.map((r) => COLUMNS.map(([, f]) => f(r)))]
    const widths = COLUMNS.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)))
    out += `\n${labelOf(workload)}\n`
    for (const c of cells) out += `${c.map((x, i) => (i < 2 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ')}\n`
  }
  return out
}

/** The same as Markdown tables. */
export function markdown(report: BenchReport): string {
  let out = `${preface(report).replace(/\n/g, '\n\n')}\n`
  for (const [workload, rows] of byWorkload(report)) {
    out += `\n### ${labelOf(workload)}\n\n| ${COLUMNS.map(([h]) => h).join(' | ')} |\n|${COLUMNS.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|\n`
    for (const r of rows) out += `| ${COLUMNS.map(([, f]) => f(r)).join(' | ')} |\n`
  }
  return out
}

const escape = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)
const PALETTE = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#637939', '#843c39']
const DASH: Record<BenchRow['kind'], string> = { zerohop: '', alternative: '6 4', floor: '2 3' }
const nameOf = (r: BenchRow): string => (r.peer === 'zerohop' ? `zerohop ${r.transport}://` : `${r.peer} (${r.transport})`)

/** Where a quantile sits on the spectrum's axis: its count of nines (the maximum one step past the last). */
function nines(q: number, last: number): number {
  return q >= 1 ? last + 0.7 : -Math.log10(1 - q)
}

/** The latency spectrum of one workload's rows. */
function spectrumPlot(rows: { row: BenchRow; spectrum: [number, number][] }[]): string {
  const W = 760
  const H = 360
  const [left, right, top, bottom] = [64, 210, 16, 44]
  const points = rows.flatMap((x) => x.spectrum.filter(([, us]) => us > 0))
  const last = Math.max(...points.filter(([q]) => q < 1).map(([q]) => -Math.log10(1 - q)))
  const yMin = Math.floor(Math.log10(Math.min(...points.map(([, us]) => us))))
  const yMax = Math.ceil(Math.log10(Math.max(...points.map(([, us]) => us))))
  const xOf = (q: number): number => left + (nines(q, last) / (last + 0.7)) * (W - left - right)
  const yOf = (us: number): number => top + (1 - (Math.log10(us) - yMin) / Math.max(1, yMax - yMin)) * (H - top - bottom)
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`
  for (let e = yMin; e <= yMax; e++) {
    svg += `<line x1="${left}" x2="${W - right}" y1="${yOf(10 ** e)}" y2="${yOf(10 ** e)}" stroke="#ddd"/><text x="${left - 6}" y="${yOf(10 ** e) + 4}" text-anchor="end">${10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)} µs</text>`
  }
  const ticks: [number, string][] = [
    [0.5, '50%'],
    [0.9, '90%'],
    [0.99, '99%'],
    [0.999, '99.9%'],
    [0.9999, '99.99%'],
    [0.99999, '99.999%'],
    [1, 'max'],
  ]
  for (const [q, label] of ticks.filter(([q]) => q === 1 || -Math.log10(1 - q) <= last + 1e-9)) {
    svg += `<line x1="${xOf(q)}" x2="${xOf(q)}" y1="${top}" y2="${H - bottom}" stroke="#eee"/><text x="${xOf(q)}" y="${H - bottom + 16}" text-anchor="middle">${label}</text>`
  }
  svg += `<text x="${(left + W - right) / 2}" y="${H - 6}" text-anchor="middle">percentile (log scale of 1/(1 − q))</text>`
  rows.forEach(({ row, spectrum }, i) => {
    const color = PALETTE[i % PALETTE.length]!
    const path = spectrum
      .filter(([q, us]) => us > 0 && q > 0)
      .map(([q, us], k) => `${k === 0 ? 'M' : 'L'}${xOf(q).toFixed(1)},${yOf(us).toFixed(1)}`)
      .join(' ')
    svg += `<path d="${path}" fill="none" stroke="${color}" stroke-width="${row.kind === 'zerohop' ? 2.5 : 1.5}" stroke-dasharray="${DASH[row.kind]}"><title>${escape(nameOf(row))}: p50 ${row.p50Us} µs, p99 ${row.p99Us} µs, max ${row.maxUs} µs</title></path>`
    svg += `<line x1="${W - right + 12}" x2="${W - right + 36}" y1="${top + 8 + i * 16}" y2="${top + 8 + i * 16}" stroke="${color}" stroke-width="2.5" stroke-dasharray="${DASH[row.kind]}"/><text x="${W - right + 42}" y="${top + 12 + i * 16}">${escape(nameOf(row))}</text>`
  })
  return `${svg}</svg>`
}

/** Messages a second of one workload's rows, as horizontal bars. */
function ratePlot(rows: BenchRow[]): string {
  const W = 760
  const left = 170
  const bar = 18
  const H = rows.length * (bar + 6) + 10
  const most = Math.max(...rows.map((r) => r.msgsPerSec))
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`
  rows.forEach((r, i) => {
    const y = 5 + i * (bar + 6)
    const w = (r.msgsPerSec / most) * (W - left - 110)
    svg += `<text x="${left - 6}" y="${y + 13}" text-anchor="end">${escape(nameOf(r))}</text><rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${bar}" fill="${r.kind === 'zerohop' ? '#d62728' : r.kind === 'floor' ? '#bbb' : '#1f77b4'}"/><text x="${left + w + 6}" y="${y + 13}">${rate(r.msgsPerSec)}/s${r.lost > 0 ? `, ${r.lost} lost` : ''}</text>`
  })
  return `${svg}</svg>`
}

/** One HTML page: per workload, the latency spectrum, the rates and the table. */
export function html(report: BenchReport): string {
  const withSpectra = report.rows.map((row, i) => ({ row, spectrum: report.spectra[i]! }))
  let body = `<h1>zerohop bench</h1><p>${escape(report.machine.date)}. ${escape(preface(report)).replace(/\n/g, '<br>')}</p>`
  for (const [workload, rows] of byWorkload(report)) {
    const kind = WORKLOADS.find((w) => w.id === workload)?.kind
    body += `<h2>${escape(labelOf(workload))}</h2>`
    body += `<h3>Latency${kind === 'oneway' ? ' of delivery at full speed' : ' of a round trip'}: lower is better</h3>${spectrumPlot(withSpectra.filter((x) => x.row.workload === workload))}`
    body += `<h3>${kind === 'rtt' ? 'Round trips' : 'Messages received'} a second: longer is better</h3>${ratePlot(rows)}`
    body += `<table><tr>${COLUMNS.map(([h]) => `<th>${escape(h)}</th>`).join('')}</tr>${rows.map((r) => `<tr class="${r.kind}">${COLUMNS.map(([, f]) => `<td>${escape(f(r))}</td>`).join('')}</tr>`).join('')}</table>`
  }
  const style = 'body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0 2em}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}tr.zerohop td{font-weight:600}'
  return `<!doctype html><html><head><meta charset="utf-8"><title>zerohop bench</title><style>${style}</style></head><body>${body}</body></html>\n`
}
