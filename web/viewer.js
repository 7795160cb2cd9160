// image2model viewer: a WebGL2 preview of binary glTF 2.0 (GLB) models, drawn
// as they are (textures, vertex colours, normals, materials, node transforms).
// Our own code, no dependencies, nothing fetched: it runs under the page's
// CSP (`script-src 'self'`; images are decoded from Blobs with
// createImageBitmap, no URL is loaded).
//
// Public API (app.js and the browser tests use it; keep it stable):
//
//   const viewer = new Viewer(canvas)
//       Takes over `canvas` (WebGL2, preserveDrawingBuffer so tests can read
//       pixels). Throws an Error if the browser has no WebGL2. The canvas
//       gets tabindex=0, role=img and an aria-label if it has none, and its
//       drawing-buffer size follows its CSS size × devicePixelRatio: size the
//       canvas with CSS (e.g. `width: 100%` plus a height or aspect-ratio).
//   await viewer.load(arrayBuffer)
//       Shows the GLB in `arrayBuffer` (an ArrayBuffer or a typed array).
//       The previous model is removed at once. Resolves once the first frame
//       with the new model is drawn. Rejects with an Error whose message is
//       a sentence for a person ("This file is not a GLB (binary glTF)
//       model.", "This
//       model needs Draco mesh compression (KHR_draco_mesh_compression),
//       which the preview cannot decode.", ...) and leaves the canvas
//       cleared. A load() overtaken by a newer one rejects with an Error
//       whose name is "AbortError" (ignore those).
//   viewer.reset()     frames the whole model again (same as the r key).
//   viewer.dispose()   stops listening, frees GPU memory and clears the
//                      canvas; the object is dead (a new Viewer may take
//                      the same canvas).
//   viewer.warnings    strings about parts of the last model not drawn
//                      (e.g. an undecodable texture, points or lines).
//   canvas.dataset.viewerState
//       "loading" while a load() runs, "ready" once the first frame of a
//       model is drawn, "error" after a failed load().
//
//   parseGlb(arrayBuffer) -> model
//       The CPU side alone (no WebGL, no DOM): validates and decodes the GLB
//       into flat typed arrays, materials, draw list and bounds. Throws the
//       same readable Errors. Every read is bounds-checked against the file,
//       so a lying count or offset cannot cause a huge allocation.
//
// Controls: drag (one finger, or left mouse button) orbits; right/middle
// button or shift+drag, or two fingers, pan; wheel or pinch zooms; double
// click resets. Keyboard on the focused canvas: arrows orbit, shift+arrows
// pan, + / - zoom, r or Home reset.
//
// glTF support: triangles (mode 4; strips and fans are converted; points and
// lines are skipped with a warning), indexed (u8/u16/u32) or not, sparse
// accessors, quantized attributes (KHR_mesh_quantization), the default
// scene's node hierarchy (matrix or TRS; mirrored nodes keep their facing),
// metallic-roughness materials: base colour factor and texture,
// metallic/roughness factors and texture, emissive, occlusion, alpha modes
// OPAQUE / MASK (alphaCutoff) / BLEND (drawn after the opaque parts, back to
// front), doubleSided, KHR_materials_unlit, KHR_materials_emissive_strength,
// KHR_materials_pbrSpecularGlossiness (approximated: diffuse as base colour),
// COLOR_0 (vec3/vec4, float or normalized), TEXCOORD_0/1 (texCoord), NORMAL
// (smooth shading; flat shading from screen derivatives without it),
// normal maps (tangent frame from derivatives; TANGENT is not read),
// embedded PNG / JPEG / WebP (EXT_texture_webp) images with their sampler's
// wrap and filter modes and mipmaps (images larger than the GPU allows are
// scaled down). A part without a material is drawn matte grey (not the
// spec's white metal, which reads badly without an environment map). Not
// drawn: skins and morph targets (the mesh shows in its bind
// pose), animations, cameras, KHR_texture_transform and the other
// extensions; a model that *requires* one of those (or Draco / meshopt
// compression, KTX2 textures) is refused with a message, one that only
// uses them is drawn without them and says so in `warnings`.

const GLB_MAGIC = 0x46546c67; // "glTF"
const CHUNK_JSON = 0x4e4f534a;
const CHUNK_BIN = 0x004e4942;

// componentType -> [bytes, DataView getter, normalization divisor (0: none)]
const COMPONENTS = {
  5120: [1, "getInt8", 127],
  5121: [1, "getUint8", 255],
  5122: [2, "getInt16", 32767],
  5123: [2, "getUint16", 65535],
  5125: [4, "getUint32", 0],
  5126: [4, "getFloat32", 0],
};
const TYPE_SIZE = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT2: 4, MAT3: 9, MAT4: 16 };

/** Extensions we draw correctly, so a model may require them. */
const SUPPORTED_EXTENSIONS = new Set([
  "KHR_materials_unlit",
  "KHR_mesh_quantization",
  "KHR_materials_emissive_strength",
  "EXT_texture_webp",
  "KHR_materials_pbrSpecularGlossiness", // approximated, see materialIndex()
]);
const EXTENSION_NAMES = {
  KHR_draco_mesh_compression: "Draco mesh compression",
  EXT_meshopt_compression: "meshopt compression",
  KHR_meshopt_compression: "meshopt compression",
  KHR_texture_basisu: "KTX2 / Basis Universal textures",
  KHR_texture_transform: "texture transforms",
  EXT_mesh_gpu_instancing: "GPU instancing",
};

/** An accessor with no buffer view is all zeros; this caps its count. */
const MAX_EMPTY_ACCESSOR = 1 << 22;
const MAX_NODE_COUNT = 1 << 16;
const MAX_HULL_POINTS = 1 << 16;
/** Images above this many pixels (8192²) are not decoded. */
const MAX_IMAGE_PIXELS = 1 << 26;
/**
 * Values (vertex components and indices) the parts may add up to. Parts
 * that share accessors share their arrays, but each still costs work, so a
 * small file cannot make thousands of parts out of one large accessor.
 */
const MAX_WORK = 1 << 28;

const WRAP = { 33071: "CLAMP_TO_EDGE", 33648: "MIRRORED_REPEAT", 10497: "REPEAT" };
const FILTER = {
  9728: "NEAREST",
  9729: "LINEAR",
  9984: "NEAREST_MIPMAP_NEAREST",
  9985: "LINEAR_MIPMAP_NEAREST",
  9986: "NEAREST_MIPMAP_LINEAR",
  9987: "LINEAR_MIPMAP_LINEAR",
};

/** An error about the model itself; its message is meant for the user. */
class ModelError extends Error {}

function fail(message) {
  throw new ModelError(message);
}

function damaged(detail) {
  return fail(`This model is damaged and cannot be shown: ${detail}.`);
}

const isIndex = (v) => Number.isInteger(v) && v >= 0;

// ---------------------------------------------------------------------------
// Parsing (CPU only)
// ---------------------------------------------------------------------------

/**
 * Decodes a GLB into:
 * {
 *   primitives: [{ positions: Float32Array (xyz), normals: Float32Array|null,
 *                  texcoords: [Float32Array|null, Float32Array|null] (uv0, uv1),
 *                  colors: Float32Array|null (rgba), indices: Uint32Array|null,
 *                  vertexCount, material (index into materials),
 *                  min: [x,y,z], max: [x,y,z] (local bounds) }],
 *   materials: [{ baseColorFactor, baseColorTexture, metallicFactor, roughnessFactor,
 *                 metallicRoughnessTexture, emissiveFactor, emissiveTexture,
 *                 occlusionTexture, occlusionStrength, normalTexture, normalScale, alphaMode ("OPAQUE"|"MASK"|"BLEND"),
 *                 alphaCutoff, doubleSided, unlit }]   (textures: { texture, texCoord } or null),
 *   textures: [{ image, sampler: { wrapS, wrapT, magFilter, minFilter } }] (GL enum names),
 *   images: [{ bytes: Uint8Array, mimeType } | null],
 *   draws: [{ primitive, matrix: Float64Array(16) column-major world matrix }],
 *   bounds: { min, max } (world space), hull: [[x,y,z]] (world positions of up to
 *   65536 vertices, evenly sampled, for framing),
 *   warnings: [string]
 * }
 * Throws an Error with a readable message when the model cannot be drawn.
 */
export function parseGlb(input) {
  const buffer = toArrayBuffer(input);
  const { json, bin } = readContainer(buffer);
  const ctx = {
    json,
    bin,
    buffers: new Map(),
    views: new Map(),
    accessors: new Map(),
    work: 0,
    warnings: [],
    primitives: [],
    primitiveKeys: new Map(),
    materials: [],
    materialKeys: new Map(),
    textures: [],
    textureKeys: new Map(),
    images: [],
    imageKeys: new Map(),
  };
  checkAsset(json, ctx);

  const draws = [];
  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  let skippedModes = 0;
  for (const { node, matrix } of sceneNodes(json)) {
    if (node.mesh === undefined) continue;
    const mesh = ref(json, "meshes", node.mesh, "mesh");
    if (!Array.isArray(mesh.primitives)) damaged(`mesh ${node.mesh} has no primitives list`);
    mesh.primitives.forEach((prim, p) => {
      const index = primitive(ctx, node.mesh, p, prim);
      if (index < 0) {
        skippedModes++;
        return;
      }
      const data = ctx.primitives[index];
      draws.push({ primitive: index, matrix });
      for (const corner of boxCorners(data.min, data.max)) {
        const w = transformPoint(matrix, corner);
        for (let c = 0; c < 3; c++) {
          min[c] = Math.min(min[c], w[c]);
          max[c] = Math.max(max[c], w[c]);
        }
      }
    });
  }
  if (skippedModes) ctx.warnings.push(`${skippedModes} part(s) made of points or lines are not drawn.`);
  if (!draws.length) {
    fail(skippedModes ? "This model has only points or lines, no surfaces to show." : "This model has no triangles to show.");
  }
  if (![...min, ...max].every(Number.isFinite)) damaged("its node transforms are not finite numbers");
  return {
    primitives: ctx.primitives,
    materials: ctx.materials,
    textures: ctx.textures,
    images: ctx.images,
    draws,
    bounds: { min, max },
    hull: sampleVertices(ctx.primitives, draws),
    warnings: ctx.warnings,
  };
}

/** World positions of an even sample of the drawn vertices (all of them for a small model). */
function sampleVertices(primitives, draws) {
  let total = 0;
  for (const d of draws) total += primitives[d.primitive].vertexCount;
  const step = Math.max(1, Math.ceil(total / MAX_HULL_POINTS));
  const out = [];
  for (const d of draws) {
    const pos = primitives[d.primitive].positions;
    for (let i = 0; i < pos.length; i += 3 * step) out.push(transformPoint(d.matrix, [pos[i], pos[i + 1], pos[i + 2]]));
  }
  return out;
}

function toArrayBuffer(input) {
  if (input instanceof ArrayBuffer) return input;
  if (ArrayBuffer.isView(input)) {
    return input.buffer.slice(input.byteOffset, input.byteOffset + input.byteLength);
  }
  return fail("The model data is not binary (expected an ArrayBuffer).");
}

function readContainer(buffer) {
  const notGlb = "This file is not a GLB (binary glTF) model.";
  if (buffer.byteLength < 20) fail(buffer.byteLength ? notGlb : "The model file is empty.");
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== GLB_MAGIC) fail(notGlb);
  const version = view.getUint32(4, true);
  if (version !== 2) fail(`This GLB is glTF version ${version}; only glTF 2.0 can be shown.`);
  const length = view.getUint32(8, true);
  if (length > buffer.byteLength) damaged("the file is truncated");
  let offset = 12;
  let json = null;
  let bin = null;
  let first = true;
  while (offset + 8 <= length) {
    const chunkLength = view.getUint32(offset, true);
    const type = view.getUint32(offset + 4, true);
    const start = offset + 8;
    if (chunkLength > length - start) damaged("a chunk runs past the end of the file");
    if (first && type !== CHUNK_JSON) damaged("its first chunk is not JSON");
    if (type === CHUNK_JSON && first) {
      let text;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, start, chunkLength));
        json = JSON.parse(text);
      } catch (e) {
        damaged(`its JSON cannot be read (${e.message})`);
      }
    } else if (type === CHUNK_BIN && bin === null) {
      bin = new Uint8Array(buffer, start, chunkLength);
    } // Other chunk types are to be ignored (glTF 2.0 §4.4.3).
    first = false;
    offset = start + chunkLength + ((4 - (chunkLength % 4)) % 4);
  }
  if (json === null) damaged("it has no JSON chunk");
  if (typeof json !== "object" || Array.isArray(json)) damaged("its JSON is not an object");
  return { json, bin };
}

function checkAsset(json, ctx) {
  const version = json.asset && json.asset.version;
  if (typeof version !== "string") damaged("it has no asset version");
  if (!/^2\./.test(version)) fail(`This model is glTF version ${version}; only glTF 2.0 can be shown.`);
  const required = Array.isArray(json.extensionsRequired) ? json.extensionsRequired : [];
  for (const name of required) {
    if (SUPPORTED_EXTENSIONS.has(name)) continue;
    const what = EXTENSION_NAMES[name] ? `${EXTENSION_NAMES[name]} (${name})` : `the glTF extension ${name}`;
    fail(`This model needs ${what}, which the preview cannot decode.`);
  }
  const used = Array.isArray(json.extensionsUsed) ? json.extensionsUsed : [];
  const ignored = used.filter((n) => !SUPPORTED_EXTENSIONS.has(n) && !required.includes(n));
  if (ignored.length) ctx.warnings.push(`Optional glTF extensions not drawn: ${ignored.join(", ")}.`);
}

/** json[key][index], or a readable error when it does not exist. */
function ref(json, key, index, what) {
  const list = json[key];
  const item = Array.isArray(list) && isIndex(index) ? list[index] : undefined;
  if (item === null || typeof item !== "object") damaged(`it refers to ${what} ${index}, which does not exist`);
  return item;
}

/** Yields { node, matrix } for every node of the default scene, parents first. */
function* sceneNodes(json) {
  let roots;
  if (Array.isArray(json.scenes) && json.scenes.length) {
    const scene = ref(json, "scenes", json.scene ?? 0, "scene");
    roots = Array.isArray(scene.nodes) ? scene.nodes : [];
  } else {
    // No scene: draw every node that is nobody's child.
    const nodes = Array.isArray(json.nodes) ? json.nodes : [];
    const child = new Set();
    for (const n of nodes) if (n && Array.isArray(n.children)) for (const c of n.children) child.add(c);
    roots = nodes.map((_, i) => i).filter((i) => !child.has(i));
  }
  const seen = new Set();
  const stack = roots.map((index) => ({ index, parent: IDENTITY })).reverse();
  while (stack.length) {
    const { index, parent } = stack.pop();
    const node = ref(json, "nodes", index, "node");
    if (seen.has(index)) damaged(`node ${index} appears twice in the scene (the hierarchy is not a tree)`);
    if (seen.size >= MAX_NODE_COUNT) damaged("it has too many nodes");
    seen.add(index);
    const matrix = multiply(parent, nodeMatrix(node, index));
    yield { node, matrix };
    const children = Array.isArray(node.children) ? node.children : [];
    for (let i = children.length - 1; i >= 0; i--) stack.push({ index: children[i], parent: matrix });
  }
}

function numbers(value, length, fallback, what) {
  if (value === undefined) return fallback;
  if (!Array.isArray(value) || value.length !== length || !value.every((v) => typeof v === "number" && Number.isFinite(v))) {
    damaged(`${what} is not ${length} finite numbers`);
  }
  return value;
}

function nodeMatrix(node, index) {
  if (node.matrix !== undefined) return Float64Array.from(numbers(node.matrix, 16, null, `the matrix of node ${index}`));
  const [tx, ty, tz] = numbers(node.translation, 3, [0, 0, 0], `the translation of node ${index}`);
  let [qx, qy, qz, qw] = numbers(node.rotation, 4, [0, 0, 0, 1], `the rotation of node ${index}`);
  const [sx, sy, sz] = numbers(node.scale, 3, [1, 1, 1], `the scale of node ${index}`);
  const ql = Math.hypot(qx, qy, qz, qw) || 1;
  qx /= ql; qy /= ql; qz /= ql; qw /= ql;
  return Float64Array.of(
    (1 - 2 * (qy * qy + qz * qz)) * sx, 2 * (qx * qy + qz * qw) * sx, 2 * (qx * qz - qy * qw) * sx, 0,
    2 * (qx * qy - qz * qw) * sy, (1 - 2 * (qx * qx + qz * qz)) * sy, 2 * (qy * qz + qx * qw) * sy, 0,
    2 * (qx * qz + qy * qw) * sz, 2 * (qy * qz - qx * qw) * sz, (1 - 2 * (qx * qx + qy * qy)) * sz, 0,
    tx, ty, tz, 1,
  );
}

/** The bytes of buffer `index`: the GLB's BIN chunk or a base64 data: URI. */
function bufferBytes(ctx, index) {
  if (ctx.buffers.has(index)) return ctx.buffers.get(index);
  const buffer = ref(ctx.json, "buffers", index, "buffer");
  let bytes;
  if (buffer.uri === undefined) {
    if (index !== 0 || !ctx.bin) damaged(`buffer ${index} has no data`);
    bytes = ctx.bin;
  } else if (typeof buffer.uri === "string" && buffer.uri.startsWith("data:")) {
    bytes = decodeDataUri(buffer.uri);
    if (!bytes) damaged(`buffer ${index} has an unreadable data URI`);
  } else {
    fail("This model refers to external files, which a single-file preview cannot load; use a .glb with everything embedded.");
  }
  const length = buffer.byteLength;
  if (!isIndex(length) || length > bytes.byteLength) damaged(`buffer ${index} is shorter than it claims`);
  bytes = bytes.subarray(0, length);
  ctx.buffers.set(index, bytes);
  return bytes;
}

function decodeDataUri(uri) {
  const comma = uri.indexOf(",");
  if (comma < 0 || !/;base64$/i.test(uri.slice(0, comma))) return null;
  try {
    const text = atob(uri.slice(comma + 1));
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

/** { bytes, stride } of buffer view `index`, bounds-checked. */
function bufferView(ctx, index) {
  if (ctx.views.has(index)) return ctx.views.get(index);
  const view = ref(ctx.json, "bufferViews", index, "buffer view");
  const bytes = bufferBytes(ctx, view.buffer);
  const offset = view.byteOffset ?? 0;
  const length = view.byteLength;
  if (!isIndex(offset) || !isIndex(length) || offset + length > bytes.byteLength) {
    damaged(`buffer view ${index} lies outside its buffer`);
  }
  const stride = view.byteStride;
  if (stride !== undefined && (!Number.isInteger(stride) || stride < 4 || stride > 252)) {
    damaged(`buffer view ${index} has a bad byte stride`);
  }
  const out = { bytes: bytes.subarray(offset, offset + length), stride };
  ctx.views.set(index, out);
  return out;
}

/**
 * Reads accessor `index` into a Float32Array (or a Uint32Array when
 * `integers`), one value per component, normalized integers divided out.
 * All offsets are checked before anything is allocated.
 */
function readAccessor(ctx, index, types, integers = false) {
  const acc = ref(ctx.json, "accessors", index, "accessor");
  const size = TYPE_SIZE[acc.type];
  const comp = COMPONENTS[acc.componentType];
  if (!size || !comp) damaged(`accessor ${index} has an unknown type`);
  if (!types.includes(acc.type)) damaged(`accessor ${index} is a ${acc.type} where ${types.join(" or ")} is expected`);
  const count = acc.count;
  if (!Number.isInteger(count) || count < 1) damaged(`accessor ${index} has a bad count`);
  const key = `${index}/${integers}`;
  if (ctx.accessors.has(key)) return ctx.accessors.get(key);
  const [bytesPer, getter] = comp;
  const divisor = acc.normalized === true && !integers ? comp[2] : 0;
  const elementBytes = bytesPer * size;
  let source = null;
  let offset = 0;
  let stride = elementBytes;
  if (acc.bufferView !== undefined) {
    source = bufferView(ctx, acc.bufferView);
    offset = acc.byteOffset ?? 0;
    stride = source.stride ?? elementBytes;
    if (!isIndex(offset) || stride < elementBytes || offset + stride * (count - 1) + elementBytes > source.bytes.byteLength) {
      damaged(`accessor ${index} reads past the end of its data`);
    }
  } else if (count > MAX_EMPTY_ACCESSOR) {
    damaged(`accessor ${index} claims ${count} elements without data`);
  }
  const out = integers ? new Uint32Array(count * size) : new Float32Array(count * size);
  if (source) copyElements(source.bytes, offset, stride, count, size, bytesPer, getter, divisor, out, null);
  if (acc.sparse !== undefined) applySparse(ctx, index, acc, size, bytesPer, getter, divisor, out);
  if (!integers) {
    for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) damaged(`accessor ${index} holds values that are not finite numbers`);
  }
  ctx.accessors.set(key, out);
  return out;
}

function copyElements(bytes, offset, stride, count, size, bytesPer, getter, divisor, out, targets) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (getter === "getFloat32" && stride === size * 4 && !targets) {
    // Tightly packed floats: one copy (slice() gives an aligned buffer).
    out.set(new Float32Array(bytes.slice(offset, offset + count * stride).buffer));
    return;
  }
  const get = DataView.prototype[getter];
  const signed = getter === "getInt8" || getter === "getInt16";
  for (let i = 0; i < count; i++) {
    const at = offset + i * stride;
    const to = (targets ? targets[i] : i) * size;
    for (let c = 0; c < size; c++) {
      let v = get.call(dv, at + c * bytesPer, true);
      if (divisor) v = signed ? Math.max(v / divisor, -1) : v / divisor;
      out[to + c] = v;
    }
  }
}

function applySparse(ctx, index, acc, size, bytesPer, getter, divisor, out) {
  const sparse = acc.sparse;
  const n = sparse && sparse.count;
  if (!Number.isInteger(n) || n < 1 || n > acc.count || !sparse.indices || !sparse.values) {
    damaged(`accessor ${index} has a bad sparse section`);
  }
  const indexComp = COMPONENTS[sparse.indices.componentType];
  if (![5121, 5123, 5125].includes(sparse.indices.componentType)) damaged(`accessor ${index} has bad sparse indices`);
  const iv = bufferView(ctx, sparse.indices.bufferView);
  const io = sparse.indices.byteOffset ?? 0;
  if (!isIndex(io) || io + n * indexComp[0] > iv.bytes.byteLength) damaged(`accessor ${index} has sparse indices past its data`);
  const targets = new Uint32Array(n);
  copyElements(iv.bytes, io, indexComp[0], n, 1, indexComp[0], indexComp[1], 0, targets, null);
  for (const t of targets) if (t >= acc.count) damaged(`accessor ${index} has a sparse index out of range`);
  const vv = bufferView(ctx, sparse.values.bufferView);
  const vo = sparse.values.byteOffset ?? 0;
  if (!isIndex(vo) || vo + n * size * bytesPer > vv.bytes.byteLength) damaged(`accessor ${index} has sparse values past its data`);
  copyElements(vv.bytes, vo, size * bytesPer, n, size, bytesPer, getter, divisor, out, targets);
}

/** Decodes mesh `m`'s primitive `p` once; returns its index in ctx.primitives, or -1 (not triangles). */
function primitive(ctx, m, p, prim) {
  const key = `${m}/${p}`;
  if (ctx.primitiveKeys.has(key)) return ctx.primitiveKeys.get(key);
  const where = `mesh ${m} primitive ${p}`;
  if (!prim || typeof prim !== "object" || !prim.attributes || typeof prim.attributes !== "object") {
    damaged(`${where} has no attributes`);
  }
  const mode = prim.mode ?? 4;
  if (![0, 1, 2, 3, 4, 5, 6].includes(mode)) damaged(`${where} has an unknown mode`);
  if (mode < 4 || prim.attributes.POSITION === undefined) {
    ctx.primitiveKeys.set(key, -1);
    return -1;
  }
  const attrs = prim.attributes;
  const positions = readAccessor(ctx, attrs.POSITION, ["VEC3"]);
  const vertexCount = positions.length / 3;
  // Every part costs work in proportion to its vertices and indices.
  const spend = (n) => {
    ctx.work += n;
    if (ctx.work > MAX_WORK) fail("This model is too large to preview in this browser.");
  };
  spend(vertexCount * 16);
  const sameCount = (data, n, name) => {
    if (data && data.length !== vertexCount * n) damaged(`${where}: ${name} and POSITION have different counts`);
    return data;
  };
  const optional = (name, types) => (attrs[name] === undefined ? null : readAccessor(ctx, attrs[name], types));
  const normals = sameCount(optional("NORMAL", ["VEC3"]), 3, "NORMAL");
  const texcoords = [
    sameCount(optional("TEXCOORD_0", ["VEC2"]), 2, "TEXCOORD_0"),
    sameCount(optional("TEXCOORD_1", ["VEC2"]), 2, "TEXCOORD_1"),
  ];
  let colors = null;
  if (attrs.COLOR_0 !== undefined) {
    const acc = ref(ctx.json, "accessors", attrs.COLOR_0, "accessor");
    const raw = readAccessor(ctx, attrs.COLOR_0, ["VEC3", "VEC4"]);
    const size = acc.type === "VEC4" ? 4 : 3;
    sameCount(raw, size, "COLOR_0");
    // Integer colours must be normalized; some exporters forget the flag.
    const scale = acc.componentType !== 5126 && acc.normalized !== true ? 1 / (COMPONENTS[acc.componentType][2] || 1) : 1;
    colors = new Float32Array(vertexCount * 4);
    for (let i = 0; i < vertexCount; i++) {
      for (let c = 0; c < 4; c++) colors[i * 4 + c] = c < size ? raw[i * size + c] * scale : 1;
    }
  }

  let indices = null;
  if (prim.indices !== undefined) {
    const acc = ref(ctx.json, "accessors", prim.indices, "accessor");
    if (![5121, 5123, 5125].includes(acc.componentType)) damaged(`${where} has indices that are not unsigned integers`);
    indices = readAccessor(ctx, prim.indices, ["SCALAR"], true);
    spend(indices.length * 2);
    for (let i = 0; i < indices.length; i++) {
      if (indices[i] >= vertexCount) damaged(`${where} has an index past its ${vertexCount} vertices`);
    }
  }
  if (mode === 5 || mode === 6) indices = triangulate(mode, indices, vertexCount);
  const elementCount = indices ? indices.length : vertexCount;
  if (elementCount < 3) {
    ctx.primitiveKeys.set(key, -1);
    return -1;
  }
  if (indices && indices.length % 3) indices = indices.slice(0, indices.length - (indices.length % 3));

  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < positions.length; i += 3) {
    for (let c = 0; c < 3; c++) {
      const v = positions[i + c];
      if (v < min[c]) min[c] = v;
      if (v > max[c]) max[c] = v;
    }
  }
  const material = materialIndex(ctx, prim.material, colors !== null);
  const index = ctx.primitives.length;
  ctx.primitives.push({ positions, normals, texcoords, colors, indices, vertexCount, material, min, max });
  ctx.primitiveKeys.set(key, index);
  return index;
}

/** Triangle strips and fans as a triangle list. */
function triangulate(mode, indices, vertexCount) {
  const n = indices ? indices.length : vertexCount;
  const at = indices ? (i) => indices[i] : (i) => i;
  if (n < 3) return new Uint32Array(0);
  const out = new Uint32Array((n - 2) * 3);
  for (let i = 0; i < n - 2; i++) {
    if (mode === 6) out.set([at(0), at(i + 1), at(i + 2)], i * 3);
    else if (i % 2 === 0) out.set([at(i), at(i + 1), at(i + 2)], i * 3);
    else out.set([at(i + 1), at(i), at(i + 2)], i * 3);
  }
  return out;
}

function factor(value, length, fallback, what, lo = 0, hi = 1) {
  const v = numbers(value, length, fallback, what);
  return v.map((x) => Math.min(hi, Math.max(lo, x)));
}

function scalar(value, fallback, what, lo = 0, hi = 1) {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value)) damaged(`${what} is not a number`);
  return Math.min(hi, Math.max(lo, value));
}

/** Normalizes material `index` (undefined: the default material) once; returns its index. */
function materialIndex(ctx, index, hasColors) {
  const key = index === undefined ? (hasColors ? "default-colors" : "default") : index;
  if (ctx.materialKeys.has(key)) return ctx.materialKeys.get(key);
  let out;
  if (index === undefined) {
    // A neutral matte material instead of the spec's white metal, which
    // reads badly without an environment map; vertex colours show as they are.
    out = {
      baseColorFactor: hasColors ? [1, 1, 1, 1] : [0.5, 0.5, 0.5, 1],
      baseColorTexture: null,
      metallicFactor: 0,
      roughnessFactor: 0.7,
      metallicRoughnessTexture: null,
      emissiveFactor: [0, 0, 0],
      emissiveTexture: null,
      occlusionTexture: null,
      occlusionStrength: 1,
      normalTexture: null,
      normalScale: 1,
      alphaMode: "OPAQUE",
      alphaCutoff: 0.5,
      doubleSided: false,
      unlit: false,
    };
  } else {
    const m = ref(ctx.json, "materials", index, "material");
    const what = `material ${index}`;
    const ext = m.extensions && typeof m.extensions === "object" ? m.extensions : {};
    let pbr = m.pbrMetallicRoughness && typeof m.pbrMetallicRoughness === "object" ? m.pbrMetallicRoughness : {};
    const sg = ext.KHR_materials_pbrSpecularGlossiness;
    if (sg && typeof sg === "object" && m.pbrMetallicRoughness === undefined) {
      // Older exporters: diffuse colour as base colour, a dielectric whose
      // roughness is 1 - glossiness (the specular colour is not drawn).
      const gloss = scalar(sg.glossinessFactor, 1, `the glossiness of ${what}`);
      pbr = { baseColorFactor: sg.diffuseFactor, baseColorTexture: sg.diffuseTexture, metallicFactor: 0, roughnessFactor: 1 - gloss };
    }
    const strength = ext.KHR_materials_emissive_strength
      ? scalar(ext.KHR_materials_emissive_strength.emissiveStrength, 1, `the emissive strength of ${what}`, 0, 1e6)
      : 1;
    const alphaMode = m.alphaMode ?? "OPAQUE";
    if (!["OPAQUE", "MASK", "BLEND"].includes(alphaMode)) damaged(`${what} has an unknown alpha mode`);
    out = {
      baseColorFactor: factor(pbr.baseColorFactor, 4, [1, 1, 1, 1], `the base colour of ${what}`),
      baseColorTexture: textureRef(ctx, pbr.baseColorTexture, what),
      metallicFactor: scalar(pbr.metallicFactor, 1, `the metallic factor of ${what}`),
      roughnessFactor: scalar(pbr.roughnessFactor, 1, `the roughness factor of ${what}`),
      metallicRoughnessTexture: textureRef(ctx, pbr.metallicRoughnessTexture, what),
      emissiveFactor: factor(m.emissiveFactor, 3, [0, 0, 0], `the emissive factor of ${what}`).map((v) => v * strength),
      emissiveTexture: textureRef(ctx, m.emissiveTexture, what),
      occlusionTexture: textureRef(ctx, m.occlusionTexture, what),
      occlusionStrength: scalar(m.occlusionTexture && m.occlusionTexture.strength, 1, `the occlusion strength of ${what}`),
      normalTexture: textureRef(ctx, m.normalTexture, what),
      normalScale: scalar(m.normalTexture && m.normalTexture.scale, 1, `the normal scale of ${what}`, -1e6, 1e6),
      alphaMode,
      alphaCutoff: scalar(m.alphaCutoff, 0.5, `the alpha cutoff of ${what}`, 0, Infinity),
      doubleSided: m.doubleSided === true,
      unlit: ext.KHR_materials_unlit !== undefined,
    };
  }
  const i = ctx.materials.length;
  ctx.materials.push(out);
  ctx.materialKeys.set(key, i);
  return i;
}

/** A textureInfo as { texture (index into ctx.textures), texCoord } or null. */
function textureRef(ctx, info, what) {
  if (info === undefined) return null;
  if (!info || typeof info !== "object") damaged(`${what} has a bad texture reference`);
  const texCoord = info.texCoord ?? 0;
  if (!isIndex(texCoord)) damaged(`${what} has a bad texCoord`);
  if (texCoord > 1) {
    ctx.warnings.push(`A texture on ${what} uses TEXCOORD_${texCoord}, which is not drawn.`);
    return null;
  }
  const texture = textureIndex(ctx, info.index);
  return texture < 0 ? null : { texture, texCoord };
}

function textureIndex(ctx, index) {
  if (ctx.textureKeys.has(index)) return ctx.textureKeys.get(index);
  const texture = ref(ctx.json, "textures", index, "texture");
  const webp = texture.extensions && texture.extensions.EXT_texture_webp;
  const source = webp && webp.source !== undefined ? webp.source : texture.source;
  let out = -1;
  if (source === undefined) {
    ctx.warnings.push(`Texture ${index} has no image the preview can decode; it is not drawn.`);
  } else {
    const image = imageIndex(ctx, source);
    if (image >= 0) {
      out = ctx.textures.length;
      ctx.textures.push({ image, sampler: sampler(ctx, texture.sampler) });
    }
  }
  ctx.textureKeys.set(index, out);
  return out;
}

function sampler(ctx, index) {
  const s = index === undefined ? {} : ref(ctx.json, "samplers", index, "sampler");
  const pick = (table, value, fallback) => (value === undefined ? fallback : table[value] || fallback);
  return {
    wrapS: pick(WRAP, s.wrapS, "REPEAT"),
    wrapT: pick(WRAP, s.wrapT, "REPEAT"),
    magFilter: s.magFilter === 9728 ? "NEAREST" : "LINEAR",
    minFilter: pick(FILTER, s.minFilter, "LINEAR_MIPMAP_LINEAR"),
  };
}

function imageIndex(ctx, index) {
  if (ctx.imageKeys.has(index)) return ctx.imageKeys.get(index);
  const image = ref(ctx.json, "images", index, "image");
  let bytes = null;
  if (image.bufferView !== undefined) {
    bytes = bufferView(ctx, image.bufferView).bytes;
  } else if (typeof image.uri === "string" && image.uri.startsWith("data:")) {
    bytes = decodeDataUri(image.uri);
  }
  const mimeType = bytes ? sniffImage(bytes) : null;
  const size = mimeType ? imageSize(bytes, mimeType) : null;
  let out = -1;
  if (!bytes) {
    ctx.warnings.push(`Image ${index} is not embedded in the file; it is not drawn.`);
  } else if (!mimeType) {
    ctx.warnings.push(`Image ${index} is not a PNG, JPEG or WebP image; it is not drawn.`);
  } else if (size && size[0] * size[1] > MAX_IMAGE_PIXELS) {
    // Decoding it would take gigabytes before it could be scaled down.
    ctx.warnings.push(`Image ${index} is ${size[0]}×${size[1]} pixels, too large to decode here; it is not drawn.`);
  } else {
    out = ctx.images.length;
    ctx.images.push({ bytes, mimeType });
  }
  ctx.imageKeys.set(index, out);
  return out;
}

/** [width, height] from a PNG, JPEG or WebP header, or null if it cannot be read. */
function imageSize(b, mimeType) {
  const u16be = (i) => (b[i] << 8) | b[i + 1];
  const u32be = (i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
  if (mimeType === "image/png") {
    const ihdr = b.length >= 24 && String.fromCharCode(b[12], b[13], b[14], b[15]) === "IHDR";
    return ihdr ? [u32be(16), u32be(20)] : null;
  }
  if (mimeType === "image/jpeg") {
    // Walk the markers up to the start-of-frame segment.
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) return null;
      const marker = b[i + 1];
      if (marker === 0xff) {
        i++;
        continue;
      }
      if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
        i += 2;
        continue;
      }
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return [u16be(i + 7), u16be(i + 5)];
      }
      i += 2 + u16be(i + 2);
    }
    return null;
  }
  if (b.length < 30) return null;
  const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
  if (chunk === "VP8 ") return [(b[26] | (b[27] << 8)) & 0x3fff, (b[28] | (b[29] << 8)) & 0x3fff];
  if (chunk === "VP8L") return [1 + (((b[22] & 0x3f) << 8) | b[21]), 1 + (((b[24] & 0x0f) << 10) | (b[23] << 2) | ((b[22] & 0xc0) >> 6))];
  if (chunk === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16))];
  return null;
}

/** The image's real type from its first bytes (the declared mimeType may lie). */
function sniffImage(b) {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  if (b.length >= 12 && String.fromCharCode(b[0], b[1], b[2], b[3], b[8], b[9], b[10], b[11]) === "RIFFWEBP") return "image/webp";
  return null;
}

// ---------------------------------------------------------------------------
// Small matrix helpers (column-major 4×4)
// ---------------------------------------------------------------------------

const IDENTITY = Float64Array.of(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1);

function multiply(a, b) {
  const out = new Float64Array(16);
  for (let c = 0; c < 4; c++) {
    for (let r = 0; r < 4; r++) {
      out[c * 4 + r] = a[r] * b[c * 4] + a[4 + r] * b[c * 4 + 1] + a[8 + r] * b[c * 4 + 2] + a[12 + r] * b[c * 4 + 3];
    }
  }
  return out;
}

function transformPoint(m, [x, y, z]) {
  return [
    m[0] * x + m[4] * y + m[8] * z + m[12],
    m[1] * x + m[5] * y + m[9] * z + m[13],
    m[2] * x + m[6] * y + m[10] * z + m[14],
  ];
}

function boxCorners(min, max) {
  const out = [];
  for (let i = 0; i < 8; i++) out.push([i & 1 ? max[0] : min[0], i & 2 ? max[1] : min[1], i & 4 ? max[2] : min[2]]);
  return out;
}

/** The inverse-transpose of m's upper 3×3 (column-major), and the sign of its determinant. */
function normalMatrix(m) {
  const [a, b, c, d, e, f, g, h, i] = [m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]];
  const det = a * (e * i - f * h) - d * (b * i - c * h) + g * (b * f - c * e);
  const k = det === 0 ? 0 : 1 / det;
  // Cofactor matrix = det * inverse-transpose.
  const out = new Float32Array([
    (e * i - f * h) * k, (g * f - d * i) * k, (d * h - g * e) * k,
    (h * c - b * i) * k, (a * i - g * c) * k, (g * b - a * h) * k,
    (b * f - e * c) * k, (d * c - a * f) * k, (a * e - d * b) * k,
  ]);
  return { matrix: out, mirrored: det < 0 };
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2);
  const nf = 1 / (near - far);
  return Float64Array.of(f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0);
}

function lookAt(eye, x, y, z) {
  return Float64Array.of(
    x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
    -dot(x, eye), -dot(y, eye), -dot(z, eye), 1,
  );
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const add = (a, b, s = 1) => [a[0] + b[0] * s, a[1] + b[1] * s, a[2] + b[2] * s];
function normalize(v) {
  const l = Math.hypot(v[0], v[1], v[2]) || 1;
  return [v[0] / l, v[1] / l, v[2] / l];
}

// ---------------------------------------------------------------------------
// Shaders
// ---------------------------------------------------------------------------

const ATTRIBUTES = { aPosition: 0, aNormal: 1, aUV0: 2, aUV1: 3, aColor: 4 };

const VERTEX = `#version 300 es
in vec3 aPosition;
in vec3 aNormal;
in vec2 aUV0;
in vec2 aUV1;
in vec4 aColor;
uniform mat4 uModel;
uniform mat4 uViewProjection;
uniform mat3 uNormalMatrix;
out vec3 vWorld;
out vec3 vNormal;
out vec2 vUV0;
out vec2 vUV1;
out vec4 vColor;
void main() {
  vec4 world = uModel * vec4(aPosition, 1.0);
  vWorld = world.xyz;
  vNormal = uNormalMatrix * aNormal;
  vUV0 = aUV0;
  vUV1 = aUV1;
  vColor = aColor;
  gl_Position = uViewProjection * world;
}`;

// Linear-space shading: a GGX key and fill light that follow the camera, a
// sky/ground hemisphere for ambient (also used as a blurry environment for
// metals), textures in sRGB decoded by the hardware, sRGB output.
const FRAGMENT = `#version 300 es
precision highp float;
in vec3 vWorld;
in vec3 vNormal;
in vec2 vUV0;
in vec2 vUV1;
in vec4 vColor;
uniform bool uHasNormals;
uniform vec4 uBaseColor;
uniform float uMetallic;
uniform float uRoughness;
uniform vec3 uEmissive;
uniform float uOcclusionStrength;
uniform int uAlphaMode; // 0 opaque, 1 mask, 2 blend
uniform float uAlphaCutoff;
uniform bool uUnlit;
// Per texture: which UV set (0, 1) or -1 for none.
uniform int uBaseColorUV;
uniform int uMetalRoughUV;
uniform int uEmissiveUV;
uniform int uOcclusionUV;
uniform sampler2D uBaseColorTex;
uniform sampler2D uMetalRoughTex;
uniform sampler2D uEmissiveTex;
uniform sampler2D uOcclusionTex;
uniform int uNormalUV;
uniform sampler2D uNormalTex;
uniform float uNormalScale;
uniform vec3 uCamera;
uniform vec3 uKeyDir;
uniform vec3 uFillDir;
out vec4 outColor;

const float PI = 3.14159265;
const vec3 SKY = vec3(0.30, 0.32, 0.36);
const vec3 GROUND = vec3(0.10, 0.09, 0.08);
const vec3 KEY = vec3(1.00, 0.97, 0.92);
const vec3 FILL = vec3(0.22, 0.25, 0.30);

vec2 uvFor(int set) { return set == 1 ? vUV1 : vUV0; }

// The normal map's tangent frame from screen derivatives of position and
// UV (no TANGENT attribute needed); n is the unit surface normal.
vec3 perturb(vec3 n) {
  vec2 uv = uvFor(uNormalUV);
  vec3 dpx = dFdx(vWorld);
  vec3 dpy = dFdy(vWorld);
  vec2 dux = dFdx(uv);
  vec2 duy = dFdy(uv);
  float det = dux.x * duy.y - duy.x * dux.y;
  if (abs(det) < 1e-12) return n;
  vec3 t = (duy.y * dpx - dux.y * dpy) / det;
  t -= n * dot(n, t);
  if (dot(t, t) < 1e-20) return n;
  t = normalize(t);
  // The map's +Y points towards decreasing v (glTF's UV origin is the
  // image's top-left); flip b where the UVs are mirrored.
  vec3 b = cross(n, t);
  if (dot(b, (dux.x * dpy - duy.x * dpx) / det) > 0.0) b = -b;
  vec3 m = texture(uNormalTex, uv).xyz * 2.0 - 1.0;
  m.xy *= uNormalScale;
  vec3 p = mat3(t, b, n) * m;
  return dot(p, p) > 1e-12 ? normalize(p) : n;
}

vec3 hemisphere(vec3 dir) { return mix(GROUND, SKY, clamp(dir.y * 0.5 + 0.5, 0.0, 1.0)); }

vec3 light(vec3 n, vec3 v, vec3 l, vec3 radiance, vec3 diffuse, vec3 f0, float a) {
  float nl = max(dot(n, l), 0.0);
  if (nl <= 0.0) return vec3(0.0);
  vec3 h = normalize(l + v);
  float nv = max(dot(n, v), 1e-4);
  float nh = max(dot(n, h), 0.0);
  float a2 = a * a;
  float d = a2 / (PI * pow(nh * nh * (a2 - 1.0) + 1.0, 2.0));
  float k = a * 0.5;
  float g = 1.0 / ((nl * (1.0 - k) + k) * (nv * (1.0 - k) + k));
  vec3 f = f0 + (1.0 - f0) * pow(1.0 - max(dot(h, v), 0.0), 5.0);
  vec3 specular = f * (d * g * 0.25);
  return ((1.0 - f) * diffuse + PI * specular) * radiance * nl;
}

vec3 toSrgb(vec3 c) {
  c = clamp(c, 0.0, 1.0);
  return mix(c * 12.92, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c));
}

void main() {
  vec4 base = uBaseColor * vColor;
  if (uBaseColorUV >= 0) base *= texture(uBaseColorTex, uvFor(uBaseColorUV));
  if (uAlphaMode == 1 && base.a < uAlphaCutoff) discard;
  float alpha = uAlphaMode == 2 ? base.a : 1.0;

  vec3 color;
  if (uUnlit) {
    color = base.rgb;
  } else {
    vec3 n = vNormal;
    if (uHasNormals && dot(n, n) > 1e-12) {
      n = normalize(n);
      if (!gl_FrontFacing) n = -n;
    } else {
      n = normalize(cross(dFdx(vWorld), dFdy(vWorld)));
    }
    if (uNormalUV >= 0) n = perturb(n);
    vec3 v = normalize(uCamera - vWorld);
    float metallic = uMetallic;
    float roughness = uRoughness;
    if (uMetalRoughUV >= 0) {
      vec4 mr = texture(uMetalRoughTex, uvFor(uMetalRoughUV));
      roughness *= mr.g;
      metallic *= mr.b;
    }
    roughness = clamp(roughness, 0.04, 1.0);
    vec3 diffuse = base.rgb * (1.0 - metallic);
    vec3 f0 = mix(vec3(0.04), base.rgb, metallic);
    float a = roughness * roughness;
    color = light(n, v, uKeyDir, KEY, diffuse, f0, a) + light(n, v, uFillDir, FILL, diffuse, f0, a);
    // Ambient: diffuse from the hemisphere, specular from the hemisphere in
    // the reflected direction (blurred towards the normal with roughness).
    float nv = max(dot(n, v), 1e-4);
    vec4 c0 = vec4(-1.0, -0.0275, -0.572, 0.022);
    vec4 c1 = vec4(1.0, 0.0425, 1.04, -0.04);
    vec4 r = roughness * c0 + c1;
    float a004 = min(r.x * r.x, exp2(-9.28 * nv)) * r.x + r.y;
    vec2 ab = vec2(-1.04, 1.04) * a004 + r.zw;
    vec3 reflected = normalize(mix(reflect(-v, n), n, roughness * roughness));
    vec3 ambient = hemisphere(n) * diffuse + hemisphere(reflected) * (f0 * ab.x + ab.y) * 1.6;
    if (uOcclusionUV >= 0) {
      float ao = texture(uOcclusionTex, uvFor(uOcclusionUV)).r;
      ambient *= 1.0 + uOcclusionStrength * (ao - 1.0);
    }
    color += ambient;
  }
  vec3 emissive = uEmissive;
  if (uEmissiveUV >= 0) emissive *= texture(uEmissiveTex, uvFor(uEmissiveUV)).rgb;
  color += emissive;
  outColor = vec4(toSrgb(color) * alpha, alpha);
}`;

const UNIFORMS = [
  "uModel", "uViewProjection", "uNormalMatrix", "uHasNormals", "uBaseColor", "uMetallic", "uRoughness",
  "uEmissive", "uOcclusionStrength", "uAlphaMode", "uAlphaCutoff", "uUnlit", "uBaseColorUV", "uMetalRoughUV",
  "uEmissiveUV", "uOcclusionUV", "uBaseColorTex", "uMetalRoughTex", "uEmissiveTex", "uOcclusionTex",
  "uNormalUV", "uNormalTex", "uNormalScale",
  "uCamera", "uKeyDir", "uFillDir",
];
const TEXTURE_SLOTS = [
  ["baseColorTexture", "uBaseColorTex", "uBaseColorUV", true],
  ["metallicRoughnessTexture", "uMetalRoughTex", "uMetalRoughUV", false],
  ["emissiveTexture", "uEmissiveTex", "uEmissiveUV", true],
  ["occlusionTexture", "uOcclusionTex", "uOcclusionUV", false],
  ["normalTexture", "uNormalTex", "uNormalUV", false],
];

const BACKGROUND = [0.125, 0.145, 0.172];
const FOV = (45 * Math.PI) / 180;
const DEFAULT_YAW = 0.5;
const DEFAULT_PITCH = 0.3;
const MAX_PITCH = Math.PI / 2 - 0.01;

// ---------------------------------------------------------------------------
// The viewer
// ---------------------------------------------------------------------------

/** Draws one GLB model on a canvas and lets the user look around it. */
export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.warnings = [];
    const gl = canvas.getContext("webgl2", {
      alpha: false,
      antialias: true,
      depth: true,
      premultipliedAlpha: true,
      preserveDrawingBuffer: true,
    });
    if (!gl) throw new Error("This browser cannot show 3D previews (WebGL2 is not available).");
    this.gl = gl;
    this._model = null; // parseGlb()'s result plus decoded bitmaps
    this._gpu = null; // GPU resources for _model
    this._loadToken = 0;
    this._waiters = []; // resolve callbacks of load() waiting for a frame
    this._frame = 0;
    this._lost = false;
    this._disposed = false;
    this._size = null; // device-pixel size from the ResizeObserver
    this._camera = { yaw: DEFAULT_YAW, pitch: DEFAULT_PITCH, zoom: 1, target: [0, 0, 0] };
    this._center = [0, 0, 0];
    this._radius = 1;
    this._pointers = new Map();
    this._listeners = [];

    if (!canvas.hasAttribute("tabindex")) canvas.tabIndex = 0;
    if (!canvas.hasAttribute("role")) canvas.setAttribute("role", "img");
    if (!canvas.hasAttribute("aria-label")) {
      canvas.setAttribute("aria-label", "3D model preview. Drag or use the arrow keys to turn it, shift to pan, + and - to zoom, R to reset.");
    }
    canvas.style.touchAction = "none";

    this._initGl();
    this._listen();
    if (typeof ResizeObserver !== "undefined") {
      this._resizeObserver = new ResizeObserver((entries) => this._onResize(entries[entries.length - 1]));
      try {
        this._resizeObserver.observe(canvas, { box: "device-pixel-content-box" });
      } catch {
        this._resizeObserver.observe(canvas);
      }
    }
    this._drawNow();
  }

  /** Shows the GLB in `data`; resolves once it is drawn (see the module doc). */
  async load(data) {
    if (this._disposed) throw new Error("This viewer has been disposed.");
    const token = ++this._loadToken;
    this._releaseWaiters();
    this._setState("loading");
    this._clearModel();
    this._drawNow();
    let model;
    try {
      model = parseGlb(data);
      model.bitmaps = await this._decodeImages(model);
      if (token !== this._loadToken || this._disposed) {
        for (const b of model.bitmaps) if (b) b.close();
        throw abortError();
      }
      this._model = model;
      this.warnings = model.warnings;
      for (const w of model.warnings) console.warn("viewer:", w);
      this._fit(model.bounds, model.hull);
      this.reset();
      if (!this._lost) this._upload();
    } catch (e) {
      if (e.name === "AbortError") throw e;
      if (token === this._loadToken) {
        this._clearModel();
        this._drawNow();
        this._setState("error");
      }
      if (e instanceof ModelError) throw e;
      if (e instanceof RangeError) throw new ModelError("This model is too large to preview in this browser.", { cause: e });
      throw new ModelError(`This model could not be shown (${e.message}).`, { cause: e });
    }
    // The first frame: now, or when a lost context comes back.
    const drawn = new Promise((resolve) => this._waiters.push(resolve));
    if (!this._lost) this._drawNow();
    await drawn;
    if (token !== this._loadToken) throw abortError();
  }

  /** Frames the whole model from the default angle. */
  reset() {
    this._camera = { yaw: DEFAULT_YAW, pitch: DEFAULT_PITCH, zoom: 1, target: this._center.slice() };
    this._requestDraw();
  }

  /** Stops listening to the canvas and frees GPU memory. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    this._loadToken++;
    this._releaseWaiters();
    if (this._frame) cancelAnimationFrame(this._frame);
    if (this._resizeObserver) this._resizeObserver.disconnect();
    for (const [target, type, fn, options] of this._listeners) target.removeEventListener(type, fn, options);
    this._listeners = [];
    this._clearModel();
    const gl = this.gl;
    if (!this._lost) {
      // Leave an empty canvas, not the last model.
      gl.clearColor(BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 1);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      gl.deleteProgram(this._program);
      gl.deleteTexture(this._white);
    }
  }

  // --- state -------------------------------------------------------------

  _setState(state) {
    this.canvas.dataset.viewerState = state;
  }

  /** Wakes load() calls still waiting for a frame; they see they were overtaken. */
  _releaseWaiters() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const resolve of waiters) resolve();
  }

  _clearModel() {
    this._freeGpu();
    if (this._model) for (const b of this._model.bitmaps || []) if (b) b.close();
    this._model = null;
    this.warnings = [];
  }

  async _decodeImages(model) {
    const max = this._lost ? 4096 : this.gl.getParameter(this.gl.MAX_TEXTURE_SIZE);
    return Promise.all(
      model.images.map(async (image, i) => {
        try {
          return await decodeImage(image, max);
        } catch (e) {
          model.warnings.push(`Image ${i} (${image.mimeType}) could not be decoded (${e.message}); it is not drawn.`);
          return null;
        }
      }),
    );
  }

  _fit(bounds, hull) {
    const { min, max } = bounds;
    this._center = [0, 1, 2].map((c) => (min[c] + max[c]) / 2);
    this._radius = Math.max(1e-9, Math.hypot(max[0] - min[0], max[1] - min[1], max[2] - min[2]) / 2);
    this._corners = hull.map((p) => add(p, this._center, -1));
    this._fitCache = null;
  }

  /**
   * The camera distance (at zoom 1) at which the model's vertices, seen
   * from the default angle, fill the view with a small margin. It does not
   * change while orbiting, so zoom stays put; the near and far planes use
   * the bounding sphere, so no angle clips the model.
   */
  _fitDistance(aspect) {
    if (this._fitCache && this._fitCache[0] === aspect) return this._fitCache[1];
    const { back, right, up } = basis(DEFAULT_YAW, DEFAULT_PITCH);
    const tanV = Math.tan(FOV / 2) * 0.88;
    const tanH = tanV * aspect;
    let d = this._radius * 0.1;
    for (const p of this._corners || []) {
      const z = dot(p, back);
      d = Math.max(d, z + Math.abs(dot(p, right)) / tanH, z + Math.abs(dot(p, up)) / tanV, z + this._radius * 0.1);
    }
    this._fitCache = [aspect, d];
    return d;
  }

  // --- GPU resources -------------------------------------------------------

  _initGl() {
    const gl = this.gl;
    this._program = link(gl, VERTEX, FRAGMENT);
    this._uniforms = {};
    for (const name of UNIFORMS) this._uniforms[name] = gl.getUniformLocation(this._program, name);
    gl.useProgram(this._program);
    TEXTURE_SLOTS.forEach(([, sampler], unit) => gl.uniform1i(this._uniforms[sampler], unit));
    // Values of attributes a primitive does not have (arrays disabled).
    gl.vertexAttrib3f(ATTRIBUTES.aNormal, 0, 0, 0);
    gl.vertexAttrib2f(ATTRIBUTES.aUV0, 0, 0);
    gl.vertexAttrib2f(ATTRIBUTES.aUV1, 0, 0);
    gl.vertexAttrib4f(ATTRIBUTES.aColor, 1, 1, 1, 1);
    this._white = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this._white);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, 1, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array([255, 255, 255, 255]));
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST); // complete without mipmaps
    this._anisotropy = gl.getExtension("EXT_texture_filter_anisotropic");
    this._maxViewport = gl.getParameter(gl.MAX_VIEWPORT_DIMS);
  }

  _upload() {
    const gl = this.gl;
    const model = this._model;
    const gpu = { buffers: [], vaos: [], textures: new Map(), samplers: new Map(), primitives: [] };
    this._gpu = gpu;
    const uploaded = new Map(); // parts sharing an accessor share its buffer
    const array = (data, location, size) => {
      let buffer = uploaded.get(data);
      if (buffer) {
        gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      } else {
        buffer = gl.createBuffer();
        gpu.buffers.push(buffer);
        uploaded.set(data, buffer);
        gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
        gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      }
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, size, gl.FLOAT, false, 0, 0);
    };
    for (const p of model.primitives) {
      const vao = gl.createVertexArray();
      gpu.vaos.push(vao);
      gl.bindVertexArray(vao);
      array(p.positions, ATTRIBUTES.aPosition, 3);
      if (p.normals) array(p.normals, ATTRIBUTES.aNormal, 3);
      if (p.texcoords[0]) array(p.texcoords[0], ATTRIBUTES.aUV0, 2);
      if (p.texcoords[1]) array(p.texcoords[1], ATTRIBUTES.aUV1, 2);
      if (p.colors) array(p.colors, ATTRIBUTES.aColor, 4);
      let indexType = null;
      let count = p.vertexCount;
      if (p.indices) {
        const small = p.vertexCount <= 65536;
        const buffer = gl.createBuffer();
        gpu.buffers.push(buffer);
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, buffer);
        gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, small ? Uint16Array.from(p.indices) : p.indices, gl.STATIC_DRAW);
        indexType = small ? gl.UNSIGNED_SHORT : gl.UNSIGNED_INT;
        count = p.indices.length;
      } else {
        count -= count % 3;
      }
      gl.bindVertexArray(null);
      const material = model.materials[p.material];
      // A texture is used only when its UV set exists and its image decoded.
      const textures = TEXTURE_SLOTS.map(([slot, , , srgb]) => {
        const t = material[slot];
        if (!t || !p.texcoords[t.texCoord]) return null;
        const texture = this._texture(t.texture, srgb);
        return texture && { ...texture, texCoord: t.texCoord };
      });
      gpu.primitives.push({ vao, count, indexType, hasNormals: !!p.normals, textures });
    }
  }

  /** A GL texture + sampler for model texture `index`, or null if its image did not decode. */
  _texture(index, srgb) {
    const gl = this.gl;
    const gpu = this._gpu;
    const { image, sampler } = this._model.textures[index];
    const bitmap = this._model.bitmaps[image];
    if (!bitmap) return null;
    const key = `${image}/${srgb}`;
    let texture = gpu.textures.get(key);
    if (!texture) {
      texture = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, texture);
      gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
      gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
      gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
      gl.texImage2D(gl.TEXTURE_2D, 0, srgb ? gl.SRGB8_ALPHA8 : gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, bitmap);
      gl.generateMipmap(gl.TEXTURE_2D);
      gpu.textures.set(key, texture);
    }
    const skey = JSON.stringify(sampler);
    let s = gpu.samplers.get(skey);
    if (!s) {
      s = gl.createSampler();
      gl.samplerParameteri(s, gl.TEXTURE_WRAP_S, gl[sampler.wrapS]);
      gl.samplerParameteri(s, gl.TEXTURE_WRAP_T, gl[sampler.wrapT]);
      gl.samplerParameteri(s, gl.TEXTURE_MAG_FILTER, gl[sampler.magFilter]);
      gl.samplerParameteri(s, gl.TEXTURE_MIN_FILTER, gl[sampler.minFilter]);
      if (this._anisotropy && sampler.minFilter === "LINEAR_MIPMAP_LINEAR") {
        const max = gl.getParameter(this._anisotropy.MAX_TEXTURE_MAX_ANISOTROPY_EXT);
        gl.samplerParameterf(s, this._anisotropy.TEXTURE_MAX_ANISOTROPY_EXT, Math.min(8, max));
      }
      gpu.samplers.set(skey, s);
    }
    return { texture, sampler: s };
  }

  _freeGpu() {
    const gpu = this._gpu;
    this._gpu = null;
    if (!gpu || this._lost) return;
    const gl = this.gl;
    for (const b of gpu.buffers) gl.deleteBuffer(b);
    for (const v of gpu.vaos) gl.deleteVertexArray(v);
    for (const t of gpu.textures.values()) gl.deleteTexture(t);
    for (const s of gpu.samplers.values()) gl.deleteSampler(s);
  }

  // --- drawing -------------------------------------------------------------

  _requestDraw() {
    if (this._frame || this._disposed) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this._drawNow();
    });
  }

  _drawNow() {
    if (this._lost || this._disposed) return;
    const gl = this.gl;
    const canvas = this.canvas;
    const [width, height] = this._targetSize();
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.viewport(0, 0, width, height);
    gl.disable(gl.BLEND);
    gl.depthMask(true);
    gl.clearColor(BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (this._model && this._gpu) {
      this._drawModel(width / height);
      const waiters = this._waiters;
      this._waiters = [];
      if (waiters.length) this._setState("ready");
      for (const resolve of waiters) resolve();
    }
  }

  _targetSize() {
    let [w, h] = this._size || [0, 0];
    if (!w || !h) {
      const dpr = window.devicePixelRatio || 1;
      w = Math.round(this.canvas.clientWidth * dpr) || this.canvas.width;
      h = Math.round(this.canvas.clientHeight * dpr) || this.canvas.height;
    }
    const max = this._maxViewport || [4096, 4096];
    return [Math.max(1, Math.min(w, max[0], 8192)), Math.max(1, Math.min(h, max[1], 8192))];
  }

  /** Camera position and basis for the current orbit. */
  _view(aspect) {
    const { yaw, pitch, zoom, target } = this._camera;
    const distance = this._fitDistance(aspect) * zoom;
    const { back, right, up } = basis(yaw, pitch);
    return { eye: add(target, back, distance), back, right, up, distance };
  }

  _drawModel(aspect) {
    const gl = this.gl;
    const u = this._uniforms;
    const { eye, back, right, up, distance } = this._view(aspect);
    const centerDistance = Math.hypot(...add(eye, this._center, -1));
    const near = Math.max(centerDistance - this._radius * 1.05, this._radius * 1e-3, distance * 1e-3);
    const far = centerDistance + this._radius * 1.05;
    const viewProjection = multiply(perspective(FOV, aspect, near, Math.max(far, near * 2)), lookAt(eye, right, up, back));

    gl.useProgram(this._program);
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LEQUAL);
    gl.uniformMatrix4fv(u.uViewProjection, false, Float32Array.from(viewProjection));
    gl.uniform3fv(u.uCamera, eye);
    // Key light from the upper left of the viewer, fill from the lower right.
    gl.uniform3fv(u.uKeyDir, normalize(add(add(back, up, 0.8), right, -0.55)));
    gl.uniform3fv(u.uFillDir, normalize(add(add(back, up, -0.25), right, 0.9)));

    const model = this._model;
    const opaque = [];
    const blended = [];
    for (const draw of model.draws) {
      const p = model.primitives[draw.primitive];
      (model.materials[p.material].alphaMode === "BLEND" ? blended : opaque).push(draw);
    }
    // Back to front by the distance of each part's centre.
    const depth = (draw) => {
      const p = model.primitives[draw.primitive];
      const c = transformPoint(draw.matrix, [0, 1, 2].map((i) => (p.min[i] + p.max[i]) / 2));
      return dot(add(c, eye, -1), back);
    };
    blended.sort((a, b) => depth(a) - depth(b));
    for (const draw of opaque) this._drawPrimitive(draw);
    if (blended.length) {
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.depthMask(false);
      for (const draw of blended) this._drawPrimitive(draw);
      gl.depthMask(true);
      gl.disable(gl.BLEND);
    }
    gl.bindVertexArray(null);
  }

  _drawPrimitive(draw) {
    const gl = this.gl;
    const u = this._uniforms;
    const p = this._model.primitives[draw.primitive];
    const gpu = this._gpu.primitives[draw.primitive];
    const m = this._model.materials[p.material];
    if (!draw.normal) draw.normal = normalMatrix(draw.matrix);
    gl.uniformMatrix4fv(u.uModel, false, Float32Array.from(draw.matrix));
    gl.uniformMatrix3fv(u.uNormalMatrix, false, draw.normal.matrix);
    gl.frontFace(draw.normal.mirrored ? gl.CW : gl.CCW);
    if (m.doubleSided) gl.disable(gl.CULL_FACE);
    else gl.enable(gl.CULL_FACE);
    gl.uniform1i(u.uHasNormals, gpu.hasNormals ? 1 : 0);
    gl.uniform4fv(u.uBaseColor, m.baseColorFactor);
    gl.uniform1f(u.uMetallic, m.metallicFactor);
    gl.uniform1f(u.uRoughness, m.roughnessFactor);
    gl.uniform3fv(u.uEmissive, m.emissiveFactor);
    gl.uniform1f(u.uOcclusionStrength, m.occlusionStrength);
    gl.uniform1f(u.uNormalScale, m.normalScale);
    gl.uniform1i(u.uAlphaMode, { OPAQUE: 0, MASK: 1, BLEND: 2 }[m.alphaMode]);
    gl.uniform1f(u.uAlphaCutoff, m.alphaCutoff);
    gl.uniform1i(u.uUnlit, m.unlit ? 1 : 0);
    TEXTURE_SLOTS.forEach(([, , uvUniform], unit) => {
      const t = gpu.textures[unit];
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, t ? t.texture : this._white);
      gl.bindSampler(unit, t ? t.sampler : null);
      gl.uniform1i(u[uvUniform], t ? t.texCoord : -1);
    });
    gl.bindVertexArray(gpu.vao);
    if (gpu.indexType) gl.drawElements(gl.TRIANGLES, gpu.count, gpu.indexType, 0);
    else gl.drawArrays(gl.TRIANGLES, 0, gpu.count);
  }

  // --- input ---------------------------------------------------------------

  _on(target, type, fn, options) {
    target.addEventListener(type, fn, options);
    this._listeners.push([target, type, fn, options]);
  }

  _listen() {
    const canvas = this.canvas;
    this._on(canvas, "webglcontextlost", (e) => {
      e.preventDefault(); // lets the browser restore it
      this._lost = true;
      this._gpu = null;
    });
    this._on(canvas, "webglcontextrestored", () => {
      this._lost = false;
      this._initGl();
      if (this._model) this._upload();
      this._drawNow();
    });
    this._on(canvas, "pointerdown", (e) => this._pointerDown(e));
    this._on(canvas, "pointermove", (e) => this._pointerMove(e));
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      this._on(canvas, type, (e) => this._pointers.delete(e.pointerId));
    }
    this._on(canvas, "wheel", (e) => {
      e.preventDefault();
      const pixels = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1);
      this._zoom(Math.exp(Math.max(-200, Math.min(200, pixels)) * 0.002));
    }, { passive: false });
    this._on(canvas, "dblclick", (e) => {
      e.preventDefault();
      this.reset();
    });
    this._on(canvas, "contextmenu", (e) => e.preventDefault());
    this._on(canvas, "keydown", (e) => this._key(e));
  }

  _pointerDown(e) {
    if (e.pointerType === "mouse" && e.button > 2) return;
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      // The pointer may already be gone.
    }
    if (document.activeElement !== this.canvas) this.canvas.focus({ preventScroll: true, focusVisible: false });
    const pan = e.pointerType === "mouse" && (e.button === 1 || e.button === 2 || e.shiftKey || e.ctrlKey || e.metaKey);
    this._pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, pan });
    e.preventDefault();
  }

  _pointerMove(e) {
    const p = this._pointers.get(e.pointerId);
    if (!p) return;
    const others = [...this._pointers.entries()].filter(([id]) => id !== e.pointerId).map(([, q]) => q);
    const dx = e.clientX - p.x;
    const dy = e.clientY - p.y;
    if (others.length === 0) {
      if (p.pan) this._pan(dx, dy);
      else this._orbit(-dx * 0.008, dy * 0.008);
    } else {
      // Two fingers: the midpoint pans, the spread zooms (each finger's
      // move counts half, so both fingers moving together pan fully).
      const q = others[0];
      const before = Math.hypot(p.x - q.x, p.y - q.y);
      const after = Math.hypot(e.clientX - q.x, e.clientY - q.y);
      this._pan(dx / 2, dy / 2);
      if (before > 4 && after > 4) this._zoom(before / after);
    }
    p.x = e.clientX;
    p.y = e.clientY;
  }

  _key(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const step = 0.12;
    const panStep = this.canvas.clientHeight * 0.05 || 20;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[e.key]) {
      const [x, y] = arrows[e.key];
      if (e.shiftKey) this._pan(x * panStep, y * panStep);
      else this._orbit(-x * step, y * step);
    } else if (e.key === "+" || e.key === "=") {
      this._zoom(1 / 1.15);
    } else if (e.key === "-" || e.key === "_") {
      this._zoom(1.15);
    } else if (e.key === "r" || e.key === "R" || e.key === "Home") {
      this.reset();
    } else {
      return;
    }
    e.preventDefault();
  }

  _orbit(dYaw, dPitch) {
    const c = this._camera;
    c.yaw += dYaw;
    c.pitch = Math.max(-MAX_PITCH, Math.min(MAX_PITCH, c.pitch + dPitch));
    this._requestDraw();
  }

  /** Moves the target so the model follows the pointer by (dx, dy) CSS pixels. */
  _pan(dx, dy) {
    const h = this.canvas.clientHeight || this.canvas.height;
    const w = this.canvas.clientWidth || this.canvas.width;
    const { right, up, distance } = this._view(w / h);
    const perPixel = (2 * distance * Math.tan(FOV / 2)) / h;
    const c = this._camera;
    c.target = add(add(c.target, right, -dx * perPixel), up, dy * perPixel);
    // Keep the model within reach.
    const off = add(c.target, this._center, -1);
    const len = Math.hypot(...off);
    if (len > this._radius * 3) c.target = add(this._center, off, (this._radius * 3) / len);
    this._requestDraw();
  }

  _zoom(factor) {
    const c = this._camera;
    c.zoom = Math.max(0.1, Math.min(20, c.zoom * factor));
    this._requestDraw();
  }

  _onResize(entry) {
    const dpr = window.devicePixelRatio || 1;
    let w = Math.round(entry.contentRect.width * dpr);
    let h = Math.round(entry.contentRect.height * dpr);
    // The exact device-pixel size when the browser gives one that agrees
    // (emulated device scale factors report CSS pixels there).
    const exact = entry.devicePixelContentBoxSize && entry.devicePixelContentBoxSize[0];
    if (exact && Math.abs(exact.inlineSize - w) <= 1 && Math.abs(exact.blockSize - h) <= 1) {
      w = exact.inlineSize;
      h = exact.blockSize;
    }
    if (!w || !h) return; // hidden: keep the last size
    if (this._size && this._size[0] === w && this._size[1] === h) return;
    this._size = [w, h];
    this._requestDraw();
  }
}

/** The camera's unit vectors for an orbit angle: back (target to eye), right, up. */
function basis(yaw, pitch) {
  const back = [Math.cos(pitch) * Math.sin(yaw), Math.sin(pitch), Math.cos(pitch) * Math.cos(yaw)];
  const right = [Math.cos(yaw), 0, -Math.sin(yaw)];
  const up = [
    back[1] * right[2] - back[2] * right[1],
    back[2] * right[0] - back[0] * right[2],
    back[0] * right[1] - back[1] * right[0],
  ];
  return { back, right, up };
}

function abortError() {
  const e = new Error("A newer model replaced this one before it was shown.");
  e.name = "AbortError";
  return e;
}

async function decodeImage({ bytes, mimeType }, maxSize) {
  const options = { premultiplyAlpha: "none", colorSpaceConversion: "none" };
  let bitmap = await createImageBitmap(new Blob([bytes], { type: mimeType }), options);
  if (bitmap.width > maxSize || bitmap.height > maxSize) {
    const scale = maxSize / Math.max(bitmap.width, bitmap.height);
    const resized = await createImageBitmap(bitmap, {
      ...options,
      resizeWidth: Math.max(1, Math.floor(bitmap.width * scale)),
      resizeHeight: Math.max(1, Math.floor(bitmap.height * scale)),
      resizeQuality: "high",
    });
    bitmap.close();
    bitmap = resized;
  }
  return bitmap;
}

function link(gl, vs, fs) {
  const program = gl.createProgram();
  for (const [type, source] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS) && !gl.isContextLost()) {
      throw new Error(`The 3D preview's shader did not compile: ${gl.getShaderInfoLog(shader)}`);
    }
    gl.attachShader(program, shader);
    gl.deleteShader(shader);
  }
  for (const [name, location] of Object.entries(ATTRIBUTES)) gl.bindAttribLocation(program, location, name);
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS) && !gl.isContextLost()) {
    throw new Error(`The 3D preview's shader did not link: ${gl.getProgramInfoLog(program)}`);
  }
  return program;
}
