// The chat page: send a message, read the streamed reply (server-sent events over a fetch()
// POST), stop it, retry or regenerate it, edit an earlier message and send it again, copy a
// message or a code block. Model output is only ever inserted as text while it streams; a
// finished message is replaced by the HTML the server rendered and sanitised.
(function () {
  "use strict";

  var form = document.getElementById("chat-form");
  if (!form) return;
  var list = document.getElementById("chat-messages");
  var input = document.getElementById("chat-input");
  var files = document.getElementById("chat-files");
  var imageInput = document.getElementById("chat-images");
  var previews = document.getElementById("chat-image-previews");
  var send = document.getElementById("chat-send");
  var stop = document.getElementById("chat-stop");
  var formError = document.getElementById("chat-form-error");
  var controller = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // HTML the server rendered (and sanitised: servers/chat/render.py) as a node.
  function fromServer(html) {
    var wrapper = document.createElement("div");
    wrapper.innerHTML = html;
    var node = wrapper.firstElementChild;
    if (node) enhance(node);
    return node;
  }

  function scrollDown() { window.scrollTo(0, document.body.scrollHeight); }

  function busy(on) {
    send.disabled = on;
    send.setAttribute("aria-busy", on ? "true" : "false");
    stop.hidden = !on;
    list.classList.toggle("is-busy", on);
  }

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  // --- copying ---------------------------------------------------------------------------------

  function copyText(text, button) {
    function done() {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { copyByCommand(text); done(); });
    } else {
      copyByCommand(text); // plain http on a LAN address: no Clipboard API
      done();
    }
  }

  function copyByCommand(text) {
    var area = el("textarea", "offscreen");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  // A message's own text (markdown as written), kept in its <template class="msg-source">.
  function sourceOf(article) {
    var source = article.querySelector("template.msg-source");
    return source ? source.content.textContent : "";
  }

  // A copy button on each code block, with the block's language.
  function enhance(root) {
    root.querySelectorAll(".markdown pre").forEach(function (pre) {
      if (pre.parentNode.classList.contains("code-block")) return;
      var block = el("div", "code-block");
      var head = el("div", "code-head small");
      var code = pre.querySelector("code");
      var lang = code && /(?:^| )language-(\S+)/.exec(code.className);
      head.appendChild(el("span", "muted", lang ? lang[1] : "text"));
      var button = el("button", "small outline secondary copy-code", "Copy code");
      button.type = "button";
      head.appendChild(button);
      pre.parentNode.insertBefore(block, pre);
      block.appendChild(head);
      block.appendChild(pre);
    });
  }

  // --- one answer as it streams in -------------------------------------------------------------

  function Answer() {
    this.article = el("article", "msg msg-assistant");
    this.article.setAttribute("data-status", "streaming");
    this.status = el("p", "chat-status small", "Waiting for the model…");
    this.body = el("div", "msg-body streaming-text");
    this.article.appendChild(this.status);
    this.article.appendChild(this.body);
    this.content = "";
    this.reasoning = ""; // the reasoning deltas shown (a model that thinks in a field of its own)
    this.thinking = null;
    this.thinkingStarted = null;
    list.appendChild(this.article);
  }
  Answer.prototype.think = function (text) {
    if (!this.thinking) {
      this.thinking = el("details", "thinking");
      this.thinking.open = true;
      this.thinkingSummary = el("summary", "", "Thinking…");
      this.thinkingText = el("div", "thinking-text");
      this.thinking.appendChild(this.thinkingSummary);
      this.thinking.appendChild(this.thinkingText);
      this.article.insertBefore(this.thinking, this.body);
      this.thinkingStarted = Date.now();
    }
    this.thinkingText.textContent += text;
    this.reasoning += text;
  };
  Answer.prototype.endThinking = function () {
    if (this.thinking && !this.thinkingEnded) {
      this.thinkingEnded = Date.now();
      var seconds = (this.thinkingEnded - this.thinkingStarted) / 1000;
      this.thinkingSummary.textContent = "Thought for " + seconds.toFixed(1) + " s";
      this.thinking.open = false;
    }
  };
  Answer.prototype.add = function (text) {
    this.content += text;
    // Models that put <think>…</think> in the content itself.
    var match = /^\s*<think>([\s\S]*?)(<\/think>|$)([\s\S]*)$/.exec(this.content);
    if (match) {
      if (!this.thinking) this.think("");
      this.thinkingText.textContent = match[1];
      if (match[2]) this.endThinking();
      this.body.textContent = match[3].replace(/^\s+/, "");
    } else {
      this.endThinking();
      this.body.textContent = this.content;
    }
  };
  Answer.prototype.setStatus = function (text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  };
  Answer.prototype.finish = function (html) {
    var replacement = fromServer(html);
    if (replacement) this.article.replaceWith(replacement);
  };
  Answer.prototype.fail = function (message, stopped) {
    this.setStatus("");
    this.endThinking();
    this.article.setAttribute("data-status", stopped ? "stopped" : "error");
    if (stopped) {
      if (!this.content && !this.thinking) this.body.remove();
      this.article.appendChild(el("p", "muted small", this.content || this.thinking ? "Stopped." : "Stopped before the model answered: nothing was kept."));
      return;
    }
    var box = el("div", "chat-error");
    box.setAttribute("role", "alert");
    box.appendChild(el("p", "", message));
    var retry = el("button", "small", "Retry");
    retry.type = "button";
    retry.addEventListener("click", function () { submit({ retry: true }); });
    box.appendChild(retry);
    if (!this.content && !this.thinking) this.body.remove();
    this.article.classList.add("chat-error-host");
    this.article.appendChild(box);
  };

  // --- the conversation --------------------------------------------------------------------------

  function remember(meta) {
    var sidebar = document.getElementById("conversation-list");
    if (sidebar && !form.getAttribute("data-conversation")) {
      var placeholder = sidebar.querySelector("[data-placeholder]");
      if (placeholder) placeholder.remove();
      var item = el("li");
      item.setAttribute("aria-current", "true");
      var link = el("a", "", meta.title);
      link.href = meta.url;
      item.appendChild(link);
      item.appendChild(el("small", "muted", "just now"));
      sidebar.insertBefore(item, sidebar.firstChild);
      // The settings can now be saved on their own.
      var settings = document.getElementById("settings-form");
      var save = document.getElementById("settings-save");
      if (settings && save) {
        settings.setAttribute("action", meta.url + "settings/");
        settings.setAttribute("hx-post", meta.url + "settings/");
        save.hidden = false;
        if (window.htmx) htmx.process(settings);
      }
    }
    form.setAttribute("data-conversation", meta.conversation);
    form.setAttribute("data-conversation-url", meta.url);
    // The picker redraws the panel for this conversation now (it says which images a text
    // server would not see).
    var picker = document.getElementById("chat-profile");
    if (picker && picker.getAttribute("hx-get") !== meta.url) {
      picker.setAttribute("hx-get", meta.url);
      if (window.htmx) htmx.process(picker);
    }
    if (window.location.pathname !== meta.url) {
      window.history.replaceState(null, "", meta.url);
      document.title = meta.title + " · Chat · MLX Portal";
    }
  }

  // The question as stored: a new one goes at the end; an edited or re-asked one replaces its
  // old self, and every message after it goes (the server deleted them).
  function showQuestion(meta) {
    var empty = list.querySelector(".chat-empty");
    if (empty) empty.remove();
    var node = fromServer(meta.html);
    var old = document.getElementById("message-" + meta.question);
    if (old) {
      while (old.nextElementSibling) old.nextElementSibling.remove();
      if (node) old.replaceWith(node);
    } else if (node) {
      list.appendChild(node);
    }
  }

  function handleEvent(block, state) {
    var name = "message", data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    if (!data.length) return; // a comment (keep-alive)
    var payload;
    try { payload = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (name === "meta") {
      remember(payload);
      showQuestion(payload);
      state.answer = new Answer();
      scrollDown();
      return;
    }
    var answer = state.answer || (state.answer = new Answer());
    if (name === "status") answer.setStatus(payload.message || "Starting the server…");
    else if (name === "error") { answer.fail(payload.message); answer.failed = true; }
    else if (name === "done") { answer.done = true; answer.finish(payload.html); }
    else if (payload.choices) {
      answer.setStatus("");
      payload.choices.forEach(function (choice) {
        var delta = choice.delta || {};
        var thought = delta.reasoning || delta.reasoning_content;
        if (thought) answer.think(thought);
        if (delta.content) answer.add(delta.content);
      });
      scrollDown();
    }
  }

  // Stop: the portal keeps no more of the reply than the page showed (what was on its way when
  // the page stopped reading is dropped). Lengths in code points, as Python counts them.
  function keepOnlyShown(answer) {
    var url = form.getAttribute("data-conversation-url");
    if (!url) return;
    var data = new FormData();
    data.set("content_chars", String(Array.from(answer.content).length));
    data.set("reasoning_chars", String(Array.from(answer.reasoning).length));
    fetch(url + "stopped/", {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value },
    }).catch(function () {});
  }

  // Send: a new message ({}), the last question again ({retry: true}: after an error, or to
  // regenerate the last reply), or an earlier message edited ({edit: id, text: "…"}).
  function submit(how) {
    if (controller) return;
    showFormError("");
    var data = new FormData(form);
    var settings = document.getElementById("settings-form");
    if (settings) {
      new FormData(settings).forEach(function (value, key) {
        if (key !== "csrfmiddlewaretoken") data.set(key, value);
      });
    }
    data.set("conversation", form.getAttribute("data-conversation") || "");
    if (how.retry || how.edit) {
      data.delete("files");
      data.delete("images");
      if (how.retry) {
        data.set("retry", "1");
        data.delete("message");
      } else {
        data.set("edit", how.edit);
        data.set("message", how.text);
      }
    } else if (!input.value.trim() && !(files && files.files.length) && !images.length) {
      showFormError("Write a message (or attach a file or an image) first.");
      return;
    }
    controller = new AbortController();
    busy(true);
    var state = { answer: null };
    fetch(form.action, {
      method: "POST",
      body: data,
      headers: { "X-CSRFToken": data.get("csrfmiddlewaretoken"), "Accept": "text/event-stream" },
      signal: controller.signal,
      credentials: "same-origin",
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          // The session ended (or the account was disabled): the portal names the page to go to.
          if (body.redirect) { window.location.assign(body.redirect); return; }
          showFormError(body.error || "The message could not be sent (HTTP " + response.status + ").");
        });
      }
      if (!how.retry && !how.edit) {
        input.value = "";
        if (files) files.value = "";
        setImages([]);
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (step) {
          if (step.done) {
            if (buffer.trim()) handleEvent(buffer, state);
            var answer = state.answer || (state.answer = new Answer());
            if (!answer.done && !answer.failed) answer.fail("The reply ended early. The server may have stopped.");
            return;
          }
          buffer += decoder.decode(step.value, { stream: true }).replace(/\r\n/g, "\n");
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          parts.forEach(function (block) { handleEvent(block, state); });
          return pump();
        });
      }
      return pump();
    }).catch(function (error) {
      if (error.name === "AbortError") {
        if (state.answer) {
          keepOnlyShown(state.answer);
          state.answer.fail("", true);
        }
      } else if (state.answer) {
        state.answer.fail("The connection to the portal broke: " + error.message);
      } else {
        showFormError("The portal could not be reached: " + error.message);
      }
    }).finally(function () {
      controller = null;
      busy(false);
      if (!how.edit) input.focus();
      refreshServer();
    });
  }

  // --- editing an earlier message ----------------------------------------------------------------

  function startEdit(article) {
    if (controller || article.querySelector(".edit-box")) return;
    var body = article.querySelector(".msg-body");
    var foot = article.querySelector(".msg-foot");
    var box = el("div", "edit-box");
    var area = el("textarea");
    area.rows = 4;
    area.value = sourceOf(article);
    area.setAttribute("aria-label", "Edit message");
    var later = 0;
    for (var next = article.nextElementSibling; next; next = next.nextElementSibling) later++;
    var note = el("p", "muted small", later
      ? "Sending replaces the " + later + " later message" + (later === 1 ? "" : "s") + " of this conversation."
      : "");
    var row = el("div", "edit-actions");
    var go = el("button", "small", "Save and send");
    go.type = "button";
    var cancel = el("button", "small secondary outline", "Cancel");
    cancel.type = "button";
    row.appendChild(go);
    row.appendChild(cancel);
    box.appendChild(area);
    if (later) box.appendChild(note);
    box.appendChild(row);
    body.hidden = true;
    if (foot) foot.hidden = true;
    article.insertBefore(box, body);
    area.focus();
    function close() { box.remove(); body.hidden = false; if (foot) foot.hidden = false; }
    cancel.addEventListener("click", close);
    go.addEventListener("click", function () {
      if (!area.value.trim()) { showFormError("An edited message cannot be empty: write something."); return; }
      submit({ edit: article.getAttribute("data-id"), text: area.value });
    });
    area.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); go.click(); }
      if (event.key === "Escape") close();
    });
  }

  list.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) return;
    var article = button.closest("article.msg");
    if (button.classList.contains("copy-code")) {
      var code = button.closest(".code-block").querySelector("pre");
      copyText(code.textContent, button);
    } else if (button.getAttribute("data-action") === "copy" && article) {
      copyText(sourceOf(article), button);
    } else if (button.getAttribute("data-action") === "regenerate") {
      submit({ retry: true });
    } else if (button.getAttribute("data-action") === "edit" && article) {
      startEdit(article);
    }
  });

  // A message may have started the server (on demand): show its state as it is now, in the
  // panel and in the picker, instead of the "stopped" the page was drawn with.
  function refreshServer() {
    var panel = document.getElementById("server-panel");
    var select = document.getElementById("chat-profile");
    if (!panel || !select || !select.value || panel.getAttribute("data-state") === "running") return;
    htmx.ajax("GET", select.getAttribute("hx-get"), {
      target: "#server-panel", swap: "outerHTML", values: { profile: select.value },
    }).then(function () {
      var state = document.getElementById("server-panel").getAttribute("data-state");
      var option = select.options[select.selectedIndex];
      if (state && option) option.textContent = option.textContent.replace(/ — [^—]*$/, " — " + state);
    });
  }

  // --- images (for a vision server): picked, dropped or pasted, previewed, sent in "images" ---
  // The portal checks each one again (servers/gateway/images.py); these checks only say the
  // limits sooner.

  var images = [];
  var IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

  function megabytes(bytes) { return (bytes / (1024 * 1024)).toFixed(1) + " MiB"; }

  function setImages(list) {
    images = list;
    if (!imageInput) return;
    var transfer = new DataTransfer();
    images.forEach(function (file) { transfer.items.add(file); });
    imageInput.files = transfer.files;
    previews.textContent = "";
    images.forEach(function (file, index) {
      var box = el("span", "image-preview");
      var img = el("img", "chat-thumb");
      img.alt = file.name;
      img.title = file.name;
      var reader = new FileReader();
      reader.onload = function () { img.src = reader.result; }; // a data: URL (the CSP allows it)
      reader.readAsDataURL(file);
      var remove = el("button", "small outline secondary", "Remove");
      remove.type = "button";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        setImages(images.filter(function (_f, i) { return i !== index; }));
      });
      box.appendChild(img);
      box.appendChild(remove);
      previews.appendChild(box);
    });
  }

  function addImages(fileList) {
    if (!imageInput) return;
    var max = Number(imageInput.getAttribute("data-max")) || 3;
    var maxBytes = Number(imageInput.getAttribute("data-max-bytes")) || 5 * 1024 * 1024;
    var next = images.slice();
    var problem = "";
    Array.prototype.forEach.call(fileList, function (file) {
      if (IMAGE_TYPES.indexOf(file.type) === -1) {
        problem = "“" + file.name + "” is not a PNG, JPEG, WebP or GIF image.";
      } else if (file.size > maxBytes) {
        problem = "“" + file.name + "” is " + megabytes(file.size) + "; an image may be at most " + megabytes(maxBytes) + ".";
      } else if (next.length >= max) {
        problem = "Attach at most " + max + " images to one message.";
      } else {
        next.push(file);
      }
    });
    showFormError(problem);
    setImages(next);
  }

  if (imageInput) {
    document.getElementById("chat-image-hint").hidden = false;
    imageInput.addEventListener("change", function () {
      var picked = Array.prototype.slice.call(imageInput.files);
      var kept = images.slice();
      images = [];
      setImages(kept);
      addImages(picked);
    });
    var composer = form.querySelector(".composer");
    composer.addEventListener("dragover", function (event) {
      if (!event.dataTransfer || Array.prototype.indexOf.call(event.dataTransfer.types, "Files") === -1) return;
      event.preventDefault();
      composer.classList.add("is-dropping");
    });
    composer.addEventListener("dragleave", function () { composer.classList.remove("is-dropping"); });
    composer.addEventListener("drop", function (event) {
      composer.classList.remove("is-dropping");
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      // Images to the images, anything else to the text files (the portal says what it is).
      var dropped = Array.prototype.slice.call(event.dataTransfer.files);
      var others = dropped.filter(function (file) { return file.type.indexOf("image/") !== 0; });
      if (others.length && files) {
        var transfer = new DataTransfer();
        Array.prototype.forEach.call(files.files, function (file) { transfer.items.add(file); });
        others.forEach(function (file) { transfer.items.add(file); });
        files.files = transfer.files;
      }
      addImages(dropped.filter(function (file) { return file.type.indexOf("image/") === 0; }));
    });
    input.addEventListener("paste", function (event) {
      var pasted = event.clipboardData ? event.clipboardData.files : [];
      if (!pasted || !pasted.length) return;
      event.preventDefault();
      addImages(pasted);
    });
  }

  enhance(list);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit({});
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit({});
    }
  });
  stop.addEventListener("click", function () { if (controller) controller.abort(); });
})();
