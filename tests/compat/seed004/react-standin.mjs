// A minimal stand-in for the two React hooks seed 004's useEntitySubscription uses (useRef,
// useEffect), enough to mount a component once and unmount it, as React does for a component
// whose props do not change: the effect runs after mounting, its cleanup on unmounting.

let rendering = null;

export function useRef(initial) {
  return { current: initial };
}

export function useEffect(effect, _deps) {
  rendering.effects.push(effect);
}

/** Mounts `component` (a function calling hooks); returns its unmount. */
export function mount(component) {
  const instance = { effects: [], cleanups: [] };
  rendering = instance;
  try {
    component();
  } finally {
    rendering = null;
  }
  for (const effect of instance.effects) {
    const cleanup = effect();
    if (typeof cleanup === 'function') instance.cleanups.push(cleanup);
  }
  return () => {
    for (const cleanup of instance.cleanups.reverse()) cleanup();
  };
}
