// Every string the page shows, in Chinese and English: one table, one lookup.

export const STRINGS = {
  en: {
    "app.title": "Sharp Eyes control room",
    "app.brand": "Sharp Eyes",
    "login.title": "Control room sign-in",
    "login.token": "Access token",
    "login.hint": "Paste the token your administrator gave you (the gateway prints the admin token at start).",
    "login.submit": "Sign in",
    "login.bad": "This token is not valid (or was revoked).",
    "login.failed": "Cannot reach the gateway: {msg}",
    "login.expired": "Your session ended: sign in again.",
    "top.logout": "Sign out",
    "top.lang": "中文",
    "top.lang.aria": "切换到中文",
    "top.role": "{name} · {role} · {node}",
    "kpi.cameras": "Cameras",
    "kpi.online": "Online rate",
    "kpi.intact": "Intact rate",
    "kpi.events": "Events / h",
    "ws.live": "Live",
    "ws.connecting": "Connecting…",
    "ws.reconnecting": "Reconnecting…",
    "ws.denied": "No event access",
    "tree.title": "Jurisdiction",
    "tree.cams": "{online}/{total} online",
    "tree.rates": "Online {online} · intact {intact}",
    "tree.aria": "Node tree",
    "cams.title": "Cameras · {node}",
    "cams.search": "Search name or id",
    "cams.state.all": "All states",
    "cams.count": "{shown} of {total} cameras",
    "cams.capped": "Showing the first {n}; pick a lower node to see the rest.",
    "cams.empty": "No cameras here.",
    "cams.lastframe": "Last frame {ago}",
    "cams.noframe": "No frame yet",
    "cams.rate": "{fps} fps analysed",
    "cams.open": "Open camera {name}",
    "state.online": "Online",
    "state.offline": "Offline",
    "state.connecting": "Connecting",
    "state.disabled": "Disabled",
    "feed.title": "Live events",
    "feed.type.all": "All types",
    "feed.label.all": "All labels",
    "feed.empty": "No events yet.",
    "feed.aria": "Event feed",
    "type.detection": "Detection",
    "type.motion": "Motion",
    "type.quality": "Video quality",
    "type.status": "Status",
    "phase.start": "start",
    "phase.update": "update",
    "phase.end": "end",
    "cam.back": "← All cameras",
    "cam.live": "Live view",
    "cam.live.off": "No live picture: {msg}",
    "cam.live.aria": "Live view of {name}",
    "cam.status": "Status",
    "cam.resolution": "Resolution",
    "cam.fps": "Frames in / analysed",
    "cam.inference": "Inference",
    "cam.reconnects": "Reconnects",
    "cam.lasterror": "Last error",
    "cam.source": "Source",
    "cam.node": "Node",
    "cam.quality": "Quality faults",
    "cam.quality.none": "none",
    "cam.events": "Recent events",
    "cam.health": "Health history",
    "cam.health.empty": "No status or quality changes recorded.",
    "cam.settings": "Settings",
    "cam.settings.readonly": "Only administrators can change settings.",
    "set.name": "Name",
    "set.enabled": "Enabled",
    "set.fps": "Analysis rate (fps)",
    "set.labels": "Labels (comma-separated; empty = all)",
    "set.min_score": "Minimum score",
    "set.save": "Save",
    "set.saved": "Saved.",
    "set.failed": "Not saved: {msg}",
    "err.forbidden": "Your token's role cannot see this.",
    "err.generic": "Error {status}: {msg}",
    "ago.s": "{n} s ago",
    "ago.m": "{n} min ago",
    "ago.h": "{n} h ago",
    "unknown": "—",
    "label.person": "person", "label.car": "car", "label.bus": "bus", "label.truck": "truck",
    "label.bicycle": "bicycle", "label.motorcycle": "motorcycle",
    "quality.signal_loss": "signal loss", "quality.black": "black screen", "quality.blue": "blue screen",
    "quality.solid": "solid screen", "quality.frozen": "frozen picture", "quality.blur": "blur",
    "quality.dark": "too dark", "quality.overexposed": "overexposed", "quality.low_contrast": "low contrast",
    "quality.colour_cast": "colour cast", "quality.color_cast": "colour cast", "quality.occlusion": "occlusion",
    "quality.scene_change": "scene change",
    "role.admin": "administrator", "role.operator": "operator", "role.viewer": "viewer",
    "source.main": "main stream", "source.substream": "substream",
    "tier.region": "Region", "tier.city": "City", "tier.county": "County", "tier.township": "Township",
    "tier.village": "Village",
  },
  zh: {
    "app.title": "雪亮工程 指挥中心",
    "app.brand": "雪亮工程",
    "login.title": "指挥中心登录",
    "login.token": "访问令牌",
    "login.hint": "请粘贴管理员发给您的令牌（网关启动时会打印管理员令牌）。",
    "login.submit": "登录",
    "login.bad": "令牌无效（或已被吊销）。",
    "login.failed": "无法连接网关：{msg}",
    "login.expired": "会话已结束，请重新登录。",
    "top.logout": "退出",
    "top.lang": "EN",
    "top.lang.aria": "Switch to English",
    "top.role": "{name} · {role} · {node}",
    "kpi.cameras": "摄像机",
    "kpi.online": "在线率",
    "kpi.intact": "完好率",
    "kpi.events": "事件/小时",
    "ws.live": "实时",
    "ws.connecting": "连接中…",
    "ws.reconnecting": "重新连接中…",
    "ws.denied": "无事件权限",
    "tree.title": "辖区",
    "tree.cams": "{online}/{total} 在线",
    "tree.rates": "在线 {online} · 完好 {intact}",
    "tree.aria": "节点树",
    "cams.title": "摄像机 · {node}",
    "cams.search": "搜索名称或编号",
    "cams.state.all": "全部状态",
    "cams.count": "显示 {shown} / 共 {total} 台",
    "cams.capped": "仅显示前 {n} 台；请选择下级节点查看其余。",
    "cams.empty": "此处没有摄像机。",
    "cams.lastframe": "最后一帧 {ago}",
    "cams.noframe": "尚无画面",
    "cams.rate": "分析 {fps} 帧/秒",
    "cams.open": "打开摄像机 {name}",
    "state.online": "在线",
    "state.offline": "离线",
    "state.connecting": "连接中",
    "state.disabled": "已停用",
    "feed.title": "实时事件",
    "feed.type.all": "全部类型",
    "feed.label.all": "全部目标",
    "feed.empty": "暂无事件。",
    "feed.aria": "事件流",
    "type.detection": "目标检测",
    "type.motion": "移动侦测",
    "type.quality": "视频质量",
    "type.status": "状态",
    "phase.start": "出现",
    "phase.update": "更新",
    "phase.end": "离开",
    "cam.back": "← 全部摄像机",
    "cam.live": "实时画面",
    "cam.live.off": "无实时画面：{msg}",
    "cam.live.aria": "{name} 的实时画面",
    "cam.status": "状态",
    "cam.resolution": "分辨率",
    "cam.fps": "输入 / 分析帧率",
    "cam.inference": "推理耗时",
    "cam.reconnects": "重连次数",
    "cam.lasterror": "最近错误",
    "cam.source": "码流",
    "cam.node": "节点",
    "cam.quality": "质量故障",
    "cam.quality.none": "无",
    "cam.events": "最近事件",
    "cam.health": "健康记录",
    "cam.health.empty": "没有状态或质量变化记录。",
    "cam.settings": "设置",
    "cam.settings.readonly": "仅管理员可以修改设置。",
    "set.name": "名称",
    "set.enabled": "启用",
    "set.fps": "分析帧率（帧/秒）",
    "set.labels": "目标类别（逗号分隔；留空为全部）",
    "set.min_score": "最低置信度",
    "set.save": "保存",
    "set.saved": "已保存。",
    "set.failed": "未保存：{msg}",
    "err.forbidden": "您的令牌角色无权查看此内容。",
    "err.generic": "错误 {status}：{msg}",
    "ago.s": "{n} 秒前",
    "ago.m": "{n} 分钟前",
    "ago.h": "{n} 小时前",
    "unknown": "—",
    "label.person": "行人", "label.car": "汽车", "label.bus": "公交车", "label.truck": "货车",
    "label.bicycle": "自行车", "label.motorcycle": "摩托车",
    "quality.signal_loss": "信号丢失", "quality.black": "黑屏", "quality.blue": "蓝屏", "quality.solid": "纯色画面",
    "quality.frozen": "画面冻结", "quality.blur": "图像模糊", "quality.dark": "画面过暗",
    "quality.overexposed": "画面过曝", "quality.low_contrast": "对比度低", "quality.colour_cast": "偏色",
    "quality.color_cast": "偏色", "quality.occlusion": "遮挡", "quality.scene_change": "场景变化",
    "role.admin": "管理员", "role.operator": "值班员", "role.viewer": "查看员",
    "source.main": "主码流", "source.substream": "子码流",
    "tier.region": "省级", "tier.city": "市级", "tier.county": "县级", "tier.township": "乡镇",
    "tier.village": "村级",
  },
};

const KEY = "se.lang";
let current = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(KEY);
  if (saved && STRINGS[saved]) return saved;  // the switch wins over the browser
  return String(navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function lang() {
  return current;
}

export function setLang(value) {
  current = STRINGS[value] ? value : "en";
  localStorage.setItem(KEY, current);
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
}

/** The string for `key` in the current language, with {name} placeholders filled in. */
export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

/** A translation when the table has one (labels, fault names), else the raw value. */
export function tOr(prefix, value) {
  const key = `${prefix}.${value}`;
  return STRINGS[current][key] ?? value;
}

/** Fill every element marked with data-i18n (text), data-i18n-placeholder, data-i18n-aria-label, data-i18n-title. */
export function applyStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.title = t("app.title");
}

setLang(current);
