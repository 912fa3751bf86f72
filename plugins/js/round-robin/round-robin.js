// Round robin in JavaScript: each healthy backend in turn.
// Same WIT (world lb-policy), same behaviour as plugins/round-robin (Rust).
import { randomU64 } from "switchyard:policy/clock@0.1.0";

let healthy = [];
let next = 0;

export const lb = {
  configure(config) {
    const keys = Object.keys(JSON.parse(config));
    if (keys.length > 0) {
      // A thrown value becomes the `err` of `result<needs, string>`.
      throw `round-robin takes no settings, got: ${keys.sort().join(", ")}`;
    }
    // Start each pooled instance at a different place, as the Rust one does.
    next = Number(randomU64() % 1024n);
    return { liveStats: false };
  },

  setBackends(backends) {
    healthy = backends.map((b) => b.healthy);
  },

  select(_req, _live) {
    const n = healthy.length;
    for (let k = 0; k < n; k++) {
      const i = (next + k) % n;
      if (healthy[i]) {
        next = i + 1;
        return i;
      }
    }
    throw "no backend available";
  },
};
