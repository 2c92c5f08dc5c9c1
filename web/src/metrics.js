// The metrics page: the fleet overview (#/metrics) or one host's charts
// (#/metrics/HOST?range=…), each following the live samples while it is shown.

import { $ } from './dom.js';
import { FleetPanel } from './fleet.js';
import { HostMetricsPanel } from './host-metrics.js';

export class MetricsView {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    this.fleet = null;
    this.panel = null; // the host page shown, if any
  }

  /** Shows what the address names: the fleet, or `host` over the range in `query`. */
  navigate({ host, query }) {
    const range = query.get('range') ?? '1h';
    if (!host) {
      this.leaveHost();
      if (!this.fleet) {
        this.fleet = new FleetPanel({ onUnauthenticated: this.onUnauthenticated });
        this.fleet.open();
      }
      $('#view-metrics').replaceChildren(this.fleet.element);
      return;
    }
    this.leaveFleet();
    if (this.panel?.host === host) {
      if (this.panel.range !== range) this.panel.setRange(range);
      return;
    }
    this.leaveHost();
    this.panel = new HostMetricsPanel({ host, onUnauthenticated: this.onUnauthenticated });
    $('#view-metrics').replaceChildren(this.panel.element);
    this.panel.open(range);
  }

  show() {}

  hide() {
    this.leaveFleet();
    this.leaveHost();
  }

  leaveFleet() {
    this.fleet?.close();
    this.fleet = null;
  }

  leaveHost() {
    this.panel?.dispose();
    this.panel = null;
  }
}
