// The web phone page (tenants/templates/tenants/web_phone.html). The browser's own
// RTCPeerConnection and getUserMedia talk to the server's web phone gateway; signalling is
// the portal's: POST for the offer and every action, Server-Sent Events for the state.
// A static file, not an inline script: the Content-Security-Policy allows only our files.
(() => {
  const root = document.getElementById("web-phone");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const d = root.dataset;
  const status = $("wp-status"), error = $("wp-error"), number = $("wp-number");
  const buttons = {call: $("wp-call"), answer: $("wp-answer"), hangup: $("wp-hangup"),
                   mute: $("wp-mute"), hold: $("wp-hold")};
  const remote = $("wp-remote"), remoteVideo = $("wp-remote-video");
  const ICE_WAIT = 5000;  // ms: host candidates come at once; we never wait longer
  let session = null, pc = null, events = null, stream = null;
  let call = "idle", held = false, muted = false, answeredAt = null, restarts = 0;
  let ring = null;  // the ring tone while a call comes in: {context, timer}

  const url = (template) => template.replace("SESSION", session);

  async function post(address, fields) {
    const response = await fetch(address, {
      method: "POST",
      body: new URLSearchParams(fields),
      headers: {"X-CSRFToken": d.csrf},
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    return response.json();
  }

  const act = (action, fields = {}) => post(url(d.actionUrl), {action, ...fields});

  function say(text) { status.textContent = text; }

  function fail(text) {
    error.textContent = text;
    error.hidden = false;
  }

  function iceDone(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_WAIT);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function start() {
    say(d.tRegistering);
    error.hidden = true;
    const opened = await post(d.openUrl, {user: d.user});
    if (!opened.ok) {
      say("");
      fail(opened.error);
      return;
    }
    session = opened.session;
    follow();
    if (!stream) {
      try {  // video when there is a camera; audio alone otherwise
        stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true})
          .catch(() => navigator.mediaDevices.getUserMedia({audio: true}));
      } catch (e) {
        fail(d.tNoMicrophone + " " + e.message);
        return;
      }
    }
    pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    pc.ontrack = (e) => {
      const element = e.track.kind === "video" ? remoteVideo : remote;
      element.srcObject = new MediaStream([e.track]);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceDone(pc);
    const answer = await act("offer", {sdp: pc.localDescription.sdp});
    if (!answer.ok) throw new Error(answer.error || "offer refused");
    await pc.setRemoteDescription({type: "answer", sdp: answer.sdp});
    root.webPhone = {pc, session};  // what the end-to-end tests read (getStats)
    buttons.call.disabled = !(call === "idle" || call === "ended");
    send(call === "answered");
    if (restarts) say(d.tReconnected);
  }

  function follow() {
    events = new EventSource(url(d.eventsUrl));
    events.addEventListener("state", (e) => show(JSON.parse(e.data)));
    events.addEventListener("lost", () => reconnect(d.tRestarted));
    events.addEventListener("closed", () => events.close());
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) reconnect(d.tLost);
      else say(d.tLost);
    };
  }

  function reconnect(text) {
    say(text);
    root.dataset.reconnecting = "true";
    restarts += 1;
    if (events) events.close();
    if (pc) pc.close();
    stopRing();
    show({call: "idle"});
    setTimeout(() => start().catch((e) => fail(d.tFailed + " " + e.message))
      .finally(() => delete root.dataset.reconnecting), 1000);
  }

  function show(state) {
    if (state.registration === "registered") say(restarts ? d.tReconnected : d.tRegistered);
    if (state.registration === "refused") fail(state.reason);
    if (!state.call) return;
    if (state.call === "answered" && call !== "answered") answeredAt = Date.now();
    call = state.call;
    held = !!state.held;
    root.dataset.call = call;
    $("wp-call-state").textContent = d["t" + call[0].toUpperCase() + call.slice(1)] || call;
    $("wp-peer").textContent = state.peer || "";
    $("wp-reason").textContent = call === "ended" ? state.call_reason || "" : (held ? d.tHeld : "");
    const idle = call === "idle" || call === "ended";
    buttons.call.disabled = !idle || !pc;
    buttons.answer.disabled = call !== "incoming";
    buttons.hangup.disabled = idle;
    buttons.mute.disabled = buttons.hold.disabled = call !== "answered";
    buttons.hold.textContent = held ? d.tResume : d.tHold;
    if (call === "incoming") startRing(); else stopRing();
    send(call === "answered");
    if (idle) answeredAt = null;
    tick();
  }

  function tick() {
    const seconds = answeredAt === null ? null : Math.floor((Date.now() - answeredAt) / 1000);
    $("wp-duration").textContent = seconds === null ? "" :
      String(Math.floor(seconds / 60)).padStart(2, "0") + ":" + String(seconds % 60).padStart(2, "0");
  }

  // The ring: 440 + 480 Hz, two seconds on, four off, made with WebAudio (no media file).
  function startRing() {
    if (ring) return;
    root.dataset.ringing = "true";
    const context = new AudioContext();
    const beep = () => {
      const gain = context.createGain();
      gain.gain.value = 0.1;
      gain.connect(context.destination);
      for (const frequency of [440, 480]) {
        const tone = context.createOscillator();
        tone.frequency.value = frequency;
        tone.connect(gain);
        tone.start();
        tone.stop(context.currentTime + 2);
      }
    };
    beep();
    ring = {context, timer: setInterval(beep, 6000)};
  }

  function stopRing() {
    if (!ring) return;
    clearInterval(ring.timer);
    ring.context.close();
    ring = null;
    delete root.dataset.ringing;
  }

  // The microphone and camera go to the gateway only during a call: between calls the
  // senders carry nothing, so an open page costs the gateway (almost) nothing.
  function send(on) {
    if (!pc || !stream) return;
    for (const transceiver of pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      const track = on ? stream.getTracks().find((t) => t.kind === kind) || null : null;
      if (transceiver.sender.track !== track) transceiver.sender.replaceTrack(track);
    }
  }

  function setMuted(value) {
    muted = value;
    for (const track of stream ? stream.getAudioTracks() : []) track.enabled = !muted;
    buttons.mute.textContent = muted ? d.tUnmute : d.tMute;
  }

  const run = (action, fields) => act(action, fields).catch((e) => fail(e.message));
  buttons.call.addEventListener("click", () => {
    if (number.value.trim()) run("call", {number: number.value.trim()});
  });
  buttons.answer.addEventListener("click", () => run("answer"));
  buttons.hangup.addEventListener("click", () => { setMuted(false); run("hangup"); });
  buttons.mute.addEventListener("click", () => setMuted(!muted));
  buttons.hold.addEventListener("click", () => run(held ? "resume" : "hold"));
  for (const key of document.querySelectorAll("#wp-dialpad button")) {
    key.addEventListener("click", () => { number.value += key.dataset.key; });
  }
  number.addEventListener("keydown", (e) => { if (e.key === "Enter") buttons.call.click(); });
  // The tab closes: end the call and the registration now rather than when the session
  // lapses (it would, some seconds later, if this beacon is lost).
  window.addEventListener("pagehide", () => {
    if (!session) return;
    const form = new FormData();
    form.append("action", "close");
    form.append("csrfmiddlewaretoken", d.csrf);
    navigator.sendBeacon(url(d.actionUrl), form);
  });
  setInterval(tick, 1000);
  start().catch((e) => fail(d.tFailed + " " + e.message));
})();
