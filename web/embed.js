// CamLIME on any page: <camlime-explain src="photo.jpg" method="gradcam"></camlime-explain>
// or CamLIME.embed(element, "photo.jpg", { method: "camlime", model: "mobilenet_v2" }).
// Both open the app's ?embed layout in an iframe next to this script; the image URL must be
// readable by the app (same origin, or served with CORS).
(function () {
  const script = document.currentScript;
  const base = new URL(".", script ? script.src : location.href);

  function frameUrl(src, options) {
    const url = new URL(base);
    url.searchParams.set("embed", "");
    url.searchParams.set("image", new URL(src, location.href).href);
    for (const key of ["method", "model", "lang"]) {
      if (options[key]) url.searchParams.set(key, options[key]);
    }
    return url.href;
  }

  function embed(element, src, options = {}) {
    const frame = document.createElement("iframe");
    frame.src = frameUrl(src, options);
    frame.title = "CamLIME explanation";
    frame.loading = "lazy";
    frame.style.border = "0";
    frame.style.width = options.width || "100%";
    frame.style.height = options.height || "640px";
    element.replaceChildren(frame);
    return frame;
  }

  class CamLimeExplain extends HTMLElement {
    static get observedAttributes() { return ["src", "method", "model", "lang"]; }
    connectedCallback() { this.render(); }
    attributeChangedCallback() { if (this.isConnected) this.render(); }
    render() {
      const src = this.getAttribute("src");
      if (!src) return;
      embed(this, src, {
        method: this.getAttribute("method"),
        model: this.getAttribute("model"),
        lang: this.getAttribute("lang"),
        width: this.getAttribute("width"),
        height: this.getAttribute("height"),
      });
    }
  }

  if (!customElements.get("camlime-explain")) customElements.define("camlime-explain", CamLimeExplain);
  window.CamLIME = Object.assign(window.CamLIME || {}, { embed, frameUrl });
})();
