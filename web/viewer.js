// A small WebGL2 viewer for binary glTF: triangle meshes of the default scene
// with node transforms, vertex colours (COLOR_0) or the material's base
// colour, flat shading from screen-space derivatives. Drag to orbit, wheel
// to zoom. Textures are not drawn (the base colour stands in).

const FLOAT = 5126;
const COMPONENT = { 5120: Int8Array, 5121: Uint8Array, 5122: Int16Array, 5123: Uint16Array, 5125: Uint32Array, 5126: Float32Array };
const NORMALIZE = { 5120: 127, 5121: 255, 5122: 32767, 5123: 65535 };
const SIZE = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };

/** Parses a GLB into { positions: Float32Array, colors: Float32Array } (non-indexed triangles). */
export function parseGlb(buffer) {
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB file");
  let offset = 12;
  let json = null;
  let bin = null;
  while (offset + 8 <= buffer.byteLength) {
    const length = view.getUint32(offset, true);
    const type = view.getUint32(offset + 4, true);
    const start = offset + 8;
    if (type === 0x4e4f534a) json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, start, length)));
    else if (type === 0x004e4942) bin = new Uint8Array(buffer, start, length);
    offset = start + length;
  }
  if (!json) throw new Error("GLB without JSON");

  function accessor(index) {
    const acc = json.accessors[index];
    const n = SIZE[acc.type];
    const out = new Float32Array(acc.count * n);
    if (acc.bufferView === undefined) return out;
    const bv = json.bufferViews[acc.bufferView];
    const Type = COMPONENT[acc.componentType];
    const stride = bv.byteStride || n * Type.BYTES_PER_ELEMENT;
    const base = bin.byteOffset + (bv.byteOffset || 0) + (acc.byteOffset || 0);
    const dv = new DataView(bin.buffer);
    const norm = acc.normalized ? NORMALIZE[acc.componentType] : 0;
    for (let i = 0; i < acc.count; i++) {
      for (let c = 0; c < n; c++) {
        const at = base + i * stride + c * Type.BYTES_PER_ELEMENT;
        let v;
        switch (acc.componentType) {
          case 5126: v = dv.getFloat32(at, true); break;
          case 5125: v = dv.getUint32(at, true); break;
          case 5123: v = dv.getUint16(at, true); break;
          case 5122: v = dv.getInt16(at, true); break;
          case 5121: v = dv.getUint8(at); break;
          default: v = dv.getInt8(at);
        }
        out[i * n + c] = norm ? v / norm : v;
      }
    }
    return out;
  }

  const positions = [];
  const colors = [];

  function nodeMatrix(node) {
    if (node.matrix) return node.matrix;
    const [tx, ty, tz] = node.translation || [0, 0, 0];
    const [qx, qy, qz, qw] = node.rotation || [0, 0, 0, 1];
    const [sx, sy, sz] = node.scale || [1, 1, 1];
    return [
      (1 - 2 * (qy * qy + qz * qz)) * sx, 2 * (qx * qy + qz * qw) * sx, 2 * (qx * qz - qy * qw) * sx, 0,
      2 * (qx * qy - qz * qw) * sy, (1 - 2 * (qx * qx + qz * qz)) * sy, 2 * (qy * qz + qx * qw) * sy, 0,
      2 * (qx * qz + qy * qw) * sz, 2 * (qy * qz - qx * qw) * sz, (1 - 2 * (qx * qx + qy * qy)) * sz, 0,
      tx, ty, tz, 1,
    ];
  }

  function visit(index, parent) {
    const node = json.nodes[index];
    const m = multiply(parent, nodeMatrix(node));
    if (node.mesh !== undefined) addMesh(json.meshes[node.mesh], m);
    for (const child of node.children || []) visit(child, m);
  }

  function addMesh(mesh, m) {
    for (const prim of mesh.primitives) {
      if ((prim.mode ?? 4) !== 4 || prim.attributes.POSITION === undefined) continue;
      const pos = accessor(prim.attributes.POSITION);
      const count = pos.length / 3;
      let col = null;
      let colSize = 3;
      if (prim.attributes.COLOR_0 !== undefined) {
        const acc = json.accessors[prim.attributes.COLOR_0];
        colSize = SIZE[acc.type];
        col = accessor(prim.attributes.COLOR_0);
        if (acc.componentType !== FLOAT && !acc.normalized) {
          const scale = NORMALIZE[acc.componentType] || 1;
          for (let i = 0; i < col.length; i++) col[i] /= scale;
        }
      }
      const material = prim.material !== undefined && json.materials ? json.materials[prim.material] : null;
      const base = material?.pbrMetallicRoughness?.baseColorFactor || [0.75, 0.75, 0.78, 1];
      const indices = prim.indices !== undefined ? accessor(prim.indices) : Array.from({ length: count }, (_, i) => i);
      for (const i of indices) {
        const x = pos[i * 3], y = pos[i * 3 + 1], z = pos[i * 3 + 2];
        positions.push(
          m[0] * x + m[4] * y + m[8] * z + m[12],
          m[1] * x + m[5] * y + m[9] * z + m[13],
          m[2] * x + m[6] * y + m[10] * z + m[14],
        );
        if (col) colors.push(col[i * colSize] * base[0], col[i * colSize + 1] * base[1], col[i * colSize + 2] * base[2]);
        else colors.push(base[0], base[1], base[2]);
      }
    }
  }

  const identity = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
  const scene = json.scenes ? json.scenes[json.scene || 0] : { nodes: (json.nodes || []).map((_, i) => i) };
  for (const n of scene.nodes || []) visit(n, identity);
  if (!positions.length) throw new Error("the model has no triangles");
  return { positions: new Float32Array(positions), colors: new Float32Array(colors) };
}

function multiply(a, b) {
  const out = new Array(16);
  for (let c = 0; c < 4; c++) {
    for (let r = 0; r < 4; r++) {
      out[c * 4 + r] = a[r] * b[c * 4] + a[4 + r] * b[c * 4 + 1] + a[8 + r] * b[c * 4 + 2] + a[12 + r] * b[c * 4 + 3];
    }
  }
  return out;
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2);
  const nf = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
}

function lookAt(eye, target) {
  const z = normalize([eye[0] - target[0], eye[1] - target[1], eye[2] - target[2]]);
  let x = cross([0, 1, 0], z);
  if (Math.hypot(...x) < 1e-6) x = [1, 0, 0];
  x = normalize(x);
  const y = cross(z, x);
  return [
    x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
    -dot(x, eye), -dot(y, eye), -dot(z, eye), 1,
  ];
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
function normalize(v) {
  const l = Math.hypot(v[0], v[1], v[2]) || 1;
  return [v[0] / l, v[1] / l, v[2] / l];
}

const VERTEX = `#version 300 es
in vec3 position;
in vec3 color;
uniform mat4 viewProjection;
out vec3 vColor;
out vec3 vPosition;
void main() {
  vColor = color;
  vPosition = position;
  gl_Position = viewProjection * vec4(position, 1.0);
}`;

const FRAGMENT = `#version 300 es
precision highp float;
in vec3 vColor;
in vec3 vPosition;
uniform vec3 light;
out vec4 outColor;
void main() {
  vec3 n = normalize(cross(dFdx(vPosition), dFdy(vPosition)));
  float diffuse = abs(dot(n, normalize(light)));
  outColor = vec4(vColor * (0.3 + 0.7 * diffuse), 1.0);
}`;

/** Draws one model on a canvas and lets the user orbit it. */
export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl2", { antialias: true });
    if (!gl) throw new Error("this browser has no WebGL2");
    this.gl = gl;
    this.program = link(gl, VERTEX, FRAGMENT);
    this.vao = gl.createVertexArray();
    this.buffers = [gl.createBuffer(), gl.createBuffer()];
    this.count = 0;
    this.yaw = 0.6;
    this.pitch = 0.7;
    this.distance = 3;
    this.center = [0, 0, 0];
    this.radius = 1;
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointerup", () => { drag = null; });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.yaw -= (e.clientX - drag[0]) * 0.01;
      this.pitch = Math.max(-1.5, Math.min(1.5, this.pitch + (e.clientY - drag[1]) * 0.01));
      drag = [e.clientX, e.clientY];
      this.draw();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.distance = Math.max(0.3, Math.min(20, this.distance * (e.deltaY > 0 ? 1.1 : 0.9)));
      this.draw();
    }, { passive: false });
  }

  /** Shows the model in `glb` (an ArrayBuffer). */
  load(glb) {
    const { positions, colors } = parseGlb(glb);
    const gl = this.gl;
    const min = [Infinity, Infinity, Infinity];
    const max = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < positions.length; i += 3) {
      for (let c = 0; c < 3; c++) {
        min[c] = Math.min(min[c], positions[i + c]);
        max[c] = Math.max(max[c], positions[i + c]);
      }
    }
    this.center = [0, 1, 2].map((c) => (min[c] + max[c]) / 2);
    this.radius = Math.max(1e-6, Math.hypot(max[0] - min[0], max[1] - min[1], max[2] - min[2]) / 2);
    this.distance = 3;
    gl.bindVertexArray(this.vao);
    const attributes = [["position", positions], ["color", colors]];
    attributes.forEach(([name, data], i) => {
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[i]);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      const loc = gl.getAttribLocation(this.program, name);
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
    });
    this.count = positions.length / 3;
    this.draw();
  }

  draw() {
    const gl = this.gl;
    const canvas = this.canvas;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0.125, 0.145, 0.172, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.count) return;
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(this.program);
    const r = this.radius * this.distance;
    const eye = [
      this.center[0] + r * Math.cos(this.pitch) * Math.sin(this.yaw),
      this.center[1] + r * Math.sin(this.pitch),
      this.center[2] + r * Math.cos(this.pitch) * Math.cos(this.yaw),
    ];
    const proj = perspective(0.8, canvas.width / canvas.height, r / 100, r * 10);
    const vp = multiply(proj, lookAt(eye, this.center));
    gl.uniformMatrix4fv(gl.getUniformLocation(this.program, "viewProjection"), false, new Float32Array(vp));
    gl.uniform3fv(gl.getUniformLocation(this.program, "light"), new Float32Array([eye[0] - this.center[0] + r, eye[1] - this.center[1] + r, eye[2] - this.center[2]]));
    gl.bindVertexArray(this.vao);
    gl.drawArrays(gl.TRIANGLES, 0, this.count);
  }
}

function link(gl, vs, fs) {
  const program = gl.createProgram();
  for (const [type, source] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    gl.attachShader(program, shader);
  }
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  return program;
}
