// The part of cli-progress's API the command line uses (the package ships no type declarations).
declare module 'cli-progress' {
  interface BarOptions {
    format?: string
    stream?: NodeJS.WritableStream
    hideCursor?: boolean
    etaBuffer?: number
    fps?: number
    noTTYOutput?: boolean
  }
  export class SingleBar {
    constructor(opts: BarOptions, preset?: unknown)
    start(total: number, start: number, payload?: Record<string, unknown>): void
    update(value: number, payload?: Record<string, unknown>): void
    stop(): void
  }
  export const Presets: { shades_classic: unknown; legacy: unknown }
}
